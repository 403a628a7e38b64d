//! Wall-clock medians for choosing between kernels and for the benchmarks that compare them.
//! Timings on a shared machine move by tens of percent from one spell to the next, so only
//! ratios measured in one go mean anything: [`interleaved_median_us`] lets the runs take turns.

use std::time::Instant;

/// Median microseconds of `f` over `repeats` runs after one warm-up.
pub fn median_us(repeats: usize, mut f: impl FnMut()) -> f64 {
    interleaved_median_us(repeats, &mut [&mut f])[0]
}

/// Median microseconds of each of `runs` over `repeats` rounds after one warm-up round, the
/// runs taking turns within every round: a slow spell of the machine then slows every run
/// alike instead of the one timed during it, so the ratios between them hold.
pub fn interleaved_median_us(repeats: usize, runs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    runs.iter_mut().for_each(|f| f());
    let mut times = vec![Vec::with_capacity(repeats); runs.len()];
    for _ in 0..repeats.max(1) {
        for (f, t) in runs.iter_mut().zip(&mut times) {
            let started = Instant::now();
            f();
            t.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each run's median is its own: a run that sleeps longer has the larger median, whatever
    /// order they take turns in, and the warm-up round is not counted.
    #[test]
    fn medians_belong_to_their_runs() {
        let mut calls = [0usize; 2];
        let (a, b) = calls.split_at_mut(1);
        let times = interleaved_median_us(
            3,
            &mut [
                &mut || {
                    a[0] += 1;
                    std::thread::sleep(std::time::Duration::from_millis(4));
                },
                &mut || b[0] += 1,
            ],
        );
        assert_eq!(calls, [4, 4], "one warm-up and three timed rounds each");
        assert!(times[0] >= 4000.0, "{times:?}");
        assert!(times[1] < times[0], "{times:?}");
    }
}
