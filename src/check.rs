//! Waiting for a condition with a deadline, and reading exact values out of the guard's
//! `/metrics` text.

use std::time::{Duration, Instant};

/// Poll `check` until it gives a value, for at most `limit`; panics naming `what` then.
pub fn wait_until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`wait_until`] for async tests: polls `check` without blocking the runtime.
pub async fn wait_until_async<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of one series in Prometheus text (`name{labels}` exactly as written, or a
/// bare `name`); `None` if the series is absent. `aop_x{a="b"} 1` is 1, never 10 or 11.
pub fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// The sum of every series of metric `name` whose labels contain `label` (`""` for
/// all): `metric_total(text, "aop_handshakes_total", "verdict=\"SUCCESS\"")`.
pub fn metric_total(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?;
            (labels.starts_with('{') && labels.contains(label))
                .then(|| value.parse::<u64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE aop_x counter\naop_x{a=\"1\"} 10\naop_x{a=\"2\"} 1\naop_y 7\n";

    #[test]
    fn a_series_is_matched_whole_and_its_value_parsed() {
        assert_eq!(metric(TEXT, "aop_x{a=\"1\"}"), Some(10));
        assert_eq!(metric(TEXT, "aop_x{a=\"2\"}"), Some(1));
        assert_eq!(metric(TEXT, "aop_y"), Some(7));
        assert_eq!(metric(TEXT, "aop_x"), None);
        assert_eq!(metric_total(TEXT, "aop_x", ""), 11);
        assert_eq!(metric_total(TEXT, "aop_x", "a=\"2\""), 1);
    }
}
