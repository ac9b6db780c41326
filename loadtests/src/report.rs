//! Rates and latency percentiles, as printed and as put in the JSON summary, and the plain-text
//! table benchmarks print them in.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest latency a histogram holds (one minute, in microseconds); larger values saturate.
const MAX_MICROS: u64 = 60_000_000;

/// An empty latency histogram in microseconds, 1 µs to one minute, three significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("bounds are valid constants")
}

/// `d` in whole microseconds, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Largest latency a nanosecond histogram holds (one second); larger values saturate.
const MAX_NANOS: u64 = 1_000_000_000;

/// An empty latency histogram in nanoseconds, 1 ns to one second, three significant figures:
/// for in-process operations too short for microseconds.
pub fn nanos_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NANOS, 3).expect("bounds are valid constants")
}

/// `d` in whole nanoseconds, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Operations per second.
pub fn per_second(ops: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    ops as f64 / elapsed.as_secs_f64()
}

/// Percentiles of a microsecond histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Percentiles {
    /// Reads the percentiles of `h` (recorded in microseconds).
    pub fn of(h: &Histogram<u64>) -> Self {
        Self::scaled(h, 1e3)
    }

    /// Reads the percentiles of `h` (recorded in nanoseconds, see [`nanos_histogram`]).
    pub fn of_nanos(h: &Histogram<u64>) -> Self {
        Self::scaled(h, 1e6)
    }

    fn scaled(h: &Histogram<u64>, per_ms: f64) -> Self {
        let ms = |v: u64| v as f64 / per_ms;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    /// `p50=… p99=… p99.9=… max=… ms`, for the human-readable lines.
    pub fn line(&self) -> String {
        format!(
            "p50={:.2} p99={:.2} p99.9={:.2} max={:.2} ms",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }

    /// The same figures as a JSON object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "p50_ms": round2(self.p50_ms),
            "p99_ms": round2(self.p99_ms),
            "p999_ms": round2(self.p999_ms),
            "max_ms": round2(self.max_ms),
        })
    }

    /// The same figures in microseconds, for operations too short for two decimals of a
    /// millisecond.
    pub fn json_micros(&self) -> serde_json::Value {
        let us = |ms: f64| round2(ms * 1000.0);
        serde_json::json!({
            "count": self.count,
            "p50_us": us(self.p50_ms),
            "p99_us": us(self.p99_ms),
            "p999_us": us(self.p999_ms),
            "max_us": us(self.max_ms),
        })
    }
}

/// `x` rounded to two decimals, so the JSON summary stays readable.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A latency for people: `41.3 µs` below a millisecond, `2.41 ms` from there.
pub fn human_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.1} µs", ms * 1000.0)
    } else {
        format!("{ms:.2} ms")
    }
}

/// How a [`Table`] column lines up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Figures.
    Right,
}

/// A plain-text table: a header, a rule, then rows, each column as wide as its widest cell.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            columns: columns
                .iter()
                .map(|(name, align)| ((*name).to_owned(), *align))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are left empty, extra cells are dropped.
    pub fn row(&mut self, cells: impl IntoIterator<Item = impl Into<String>>) {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([self.columns[i].0.chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.columns.len()).map(width).collect();
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - cell.chars().count());
                match self.columns[i].1 {
                    Align::Left => {
                        out.push_str(cell);
                        out.push_str(&pad);
                    }
                    Align::Right => {
                        out.push_str(&pad);
                        out.push_str(cell);
                    }
                }
            }
            writeln!(f, "{}", out.trim_end())
        };
        let header: Vec<String> = self.columns.iter().map(|(name, _)| name.clone()).collect();
        line(f, &header)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(f, &rule)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_read_in_milliseconds() {
        let mut h = latency_histogram();
        for us in 1..=1000 {
            h.record(us * 10).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.max_ms - 10.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn rates_survive_a_zero_duration() {
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
        assert_eq!(per_second(10, Duration::from_millis(500)), 20.0);
    }

    #[test]
    fn huge_latencies_saturate_rather_than_fail() {
        let mut h = latency_histogram();
        h.saturating_record(micros(Duration::from_secs(3600)));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn nanosecond_histograms_read_in_milliseconds_and_print_in_microseconds() {
        let mut h = nanos_histogram();
        for ns in 1..=1000 {
            h.record(ns * 50).unwrap();
        }
        let p = Percentiles::of_nanos(&h);
        assert!((p.p50_ms - 0.025).abs() < 0.0001, "{p:?}");
        // Three significant figures: 25 µs reads back as 25.01.
        let p50_us = p.json_micros()["p50_us"].as_f64().unwrap();
        assert!((p50_us - 25.0).abs() < 0.05, "{p50_us}");
        assert_eq!(human_ms(p.p50_ms), "25.0 µs");
        assert_eq!(human_ms(2.414), "2.41 ms");
    }

    #[test]
    fn a_table_aligns_its_columns() {
        let mut t = Table::new(&[("case", Align::Left), ("rate/s", Align::Right)]);
        t.row(["enroll", "312"]);
        t.row(["renew", "1450"]);
        t.row(["short"]);
        assert_eq!(
            t.to_string(),
            "case    rate/s\n------  ------\nenroll     312\nrenew     1450\nshort\n"
        );
    }
}
