//! How sparsity grows over time: one shot, in rounds, or gradually during training.

use serde::{Deserialize, Serialize};

use crate::prune::check_sparsity;
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
