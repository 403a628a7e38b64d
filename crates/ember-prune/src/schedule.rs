//! How sparsity grows over time: one shot, in rounds, or gradually during training.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::prune::{PruneConfig, check_sparsity};
use crate::{Error, Result};

/// The sparsity after each of `rounds` rounds that each prune the same fraction of the weights
/// still remaining, ending at `target`: `1 - (1 - target)^(r / rounds)`. Han et al. and the
/// lottery-ticket papers prune this way (20 % of what remains per round, say).
pub fn iterative_levels(target: f64, rounds: usize) -> Result<Vec<f64>> {
    check_sparsity("iterative target", target)?;
    if rounds == 0 {
        return Err(Error::Schedule(
            "an iterative schedule needs at least 1 round".into(),
        ));
    }
    let remaining = 1.0 - target;
    Ok((1..=rounds)
        .map(|r| {
            if r == rounds {
                target
            } else {
                1.0 - remaining.powf(r as f64 / rounds as f64)
            }
        })
        .collect())
}

/// The sparsity levels reached by pruning `rate` of the remaining weights per round while
/// more than `floor` of them remain: the lottery-ticket sequence (rate 0.2: 20 %, 36 %, 48.8 %,
/// ...).
pub fn geometric_levels(rate: f64, floor: f64) -> Result<Vec<f64>> {
    check_sparsity("rate", rate)?;
    check_sparsity("remaining floor", floor)?;
    if rate == 0.0 {
        return Err(Error::Schedule("a pruning rate of 0 never ends".into()));
    }
    let mut levels = vec![];
    let mut remaining = 1.0;
    while remaining * (1.0 - rate) >= floor - 1e-12 && remaining > 0.0 {
        remaining *= 1.0 - rate;
        levels.push(1.0 - remaining);
    }
    Ok(levels)
}

/// The targets of iterative pruning, round by round: one sparsity per round for every selected
/// layer, and per-layer sequences that override it for named layers (Frankle & Carbin prune
/// LeNet's output layer at half the rate of its hidden layers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rounds {
    /// Sparsity after each round.
    pub levels: Vec<f64>,
    /// Sparsity of a named layer (a parameter path) after each round, one per round.
    pub layer_levels: BTreeMap<String, Vec<f64>>,
}

impl Rounds {
    /// `rounds` rounds that each prune the same fraction of what remains, ending at `target`
    /// ([`iterative_levels`]: Han et al.'s schedule).
    pub fn to_target(target: f64, rounds: usize) -> Result<Self> {
        Ok(Self {
            levels: iterative_levels(target, rounds)?,
            layer_levels: BTreeMap::new(),
        })
    }

    /// `rounds` rounds that each prune `rate` of the remaining weights: `1 - (1 - rate)^r`
    /// after round `r`.
    pub fn geometric(rate: f64, rounds: usize) -> Result<Self> {
        Ok(Self {
            levels: geometric_sequence(rate, rounds)?,
            layer_levels: BTreeMap::new(),
        })
    }

    /// The same rounds, pruning `rate` of `layer`'s remaining weights per round instead.
    pub fn with_layer_rate(mut self, layer: &str, rate: f64) -> Result<Self> {
        let levels = geometric_sequence(rate, self.levels.len())?;
        self.layer_levels.insert(layer.to_string(), levels);
        Ok(self)
    }

    /// How many rounds.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Whether there is no round at all.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Checks every level and that each layer has one per round.
    pub fn validate(&self) -> Result<()> {
        for &level in &self.levels {
            check_sparsity("iterative round", level)?;
        }
        for (layer, levels) in &self.layer_levels {
            if levels.len() != self.levels.len() {
                return Err(Error::Schedule(format!(
                    "`{layer}` has {} levels for {} rounds",
                    levels.len(),
                    self.levels.len()
                )));
            }
            for &level in levels {
                check_sparsity(layer, level)?;
            }
        }
        Ok(())
    }

    /// `base` with the targets of round `round` (0-based): its overall sparsity and the named
    /// layers' on top of `base`'s own per-layer targets.
    pub fn config(&self, round: usize, base: &PruneConfig) -> PruneConfig {
        let mut layer_sparsity = base.layer_sparsity.clone();
        for (layer, levels) in &self.layer_levels {
            layer_sparsity.insert(layer.clone(), levels[round]);
        }
        PruneConfig {
            sparsity: self.levels[round],
            layer_sparsity,
            ..base.clone()
        }
    }
}

/// `1 - (1 - rate)^r` for `r` in `1..=rounds`.
fn geometric_sequence(rate: f64, rounds: usize) -> Result<Vec<f64>> {
    check_sparsity("rate", rate)?;
    Ok((1..=rounds)
        .map(|r| 1.0 - (1.0 - rate).powi(r as i32))
        .collect())
}

/// Zhu & Gupta's gradual schedule (2017): from `initial` sparsity at `start_step` to `target`
/// at `end_step`, pruning every `every` steps, fast at first and slowly at the end:
/// `s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (t_end - t_0))^3`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gradual {
    /// Sparsity at `start_step` (usually 0).
    pub initial: f64,
    /// Sparsity from `end_step` on.
    pub target: f64,
    /// First step that prunes.
    pub start_step: usize,
    /// Step at which the target is reached.
    pub end_step: usize,
    /// Steps between two pruning updates.
    pub every: usize,
}

impl Gradual {
    /// Checks the sparsities and that the steps are ordered.
    pub fn validate(&self) -> Result<()> {
        check_sparsity("gradual initial", self.initial)?;
        check_sparsity("gradual target", self.target)?;
        if self.end_step <= self.start_step {
            return Err(Error::Schedule(format!(
                "end_step {} must come after start_step {}",
                self.end_step, self.start_step
            )));
        }
        if self.every == 0 {
            return Err(Error::Schedule("`every` must be at least 1 step".into()));
        }
        Ok(())
    }

    /// The sparsity the schedule asks for at `step`.
    pub fn sparsity_at(&self, step: usize) -> f64 {
        if step < self.start_step {
            return 0.0;
        }
        if step >= self.end_step {
            return self.target;
        }
        let progress = (step - self.start_step) as f64 / (self.end_step - self.start_step) as f64;
        self.target + (self.initial - self.target) * (1.0 - progress).powi(3)
    }

    /// Whether the masks are updated at `step`: every `every` steps inside the range, and at
    /// its end.
    pub fn prunes_at(&self, step: usize) -> bool {
        step >= self.start_step
            && step <= self.end_step
            && ((step - self.start_step).is_multiple_of(self.every) || step == self.end_step)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn iterative_levels_prune_the_same_fraction_each_round() {
        let levels = iterative_levels(0.9, 2).unwrap();
        // sqrt(0.1) = 0.3162: each round keeps 31.6 % of what remained.
        assert!((levels[0] - (1.0 - 0.1f64.sqrt())).abs() < 1e-12);
        assert_eq!(levels[1], 0.9);
        assert!(iterative_levels(1.2, 3).is_err());
        assert!(iterative_levels(0.5, 0).is_err());
    }

    #[test]
    fn lottery_levels_by_hand() {
        let levels = geometric_levels(0.2, 0.5).unwrap();
        let expected = [0.2, 0.36, 0.488];
        assert_eq!(levels.len(), 3);
        for (l, e) in levels.iter().zip(expected) {
            assert!((l - e).abs() < 1e-12);
        }
    }

    #[test]
    fn rounds_with_a_slower_layer_by_hand() {
        let rounds = Rounds::geometric(0.2, 3)
            .unwrap()
            .with_layer_rate("out.weight", 0.1)
            .unwrap();
        rounds.validate().unwrap();
        for (l, e) in rounds.levels.iter().zip([0.2, 0.36, 0.488]) {
            assert!((l - e).abs() < 1e-12);
        }
        let base = PruneConfig {
            layer_sparsity: [("other.weight".to_string(), 0.3)].into(),
            ..PruneConfig::global_magnitude(0.0)
        };
        let third = rounds.config(2, &base);
        assert!((third.sparsity - 0.488).abs() < 1e-12);
        assert!((third.layer_sparsity["out.weight"] - 0.271).abs() < 1e-12);
        assert_eq!(third.layer_sparsity["other.weight"], 0.3);
        let mut short = rounds.clone();
        short.layer_levels.insert("x".into(), vec![0.1]);
        assert!(short.validate().is_err());
        assert!(Rounds::geometric(1.5, 2).is_err());
    }

    #[test]
    fn cubic_schedule_by_hand() {
        let g = Gradual {
            initial: 0.0,
            target: 0.8,
            start_step: 100,
            end_step: 200,
            every: 10,
        };
        g.validate().unwrap();
        assert_eq!(g.sparsity_at(50), 0.0);
        assert_eq!(g.sparsity_at(100), 0.0);
        // Half way: 0.8 (1 - 0.5^3) = 0.7.
        assert!((g.sparsity_at(150) - 0.7).abs() < 1e-12);
        assert_eq!(g.sparsity_at(200), 0.8);
        assert_eq!(g.sparsity_at(900), 0.8);
        assert!(g.prunes_at(110) && !g.prunes_at(115) && g.prunes_at(200) && !g.prunes_at(210));
        assert!(Gradual { end_step: 100, ..g }.validate().is_err());
        assert!(Gradual { every: 0, ..g }.validate().is_err());
    }
}
