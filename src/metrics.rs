//! Metrics as CloudWatch embedded metric format (EMF): one JSON line per metric set on stdout,
//! which CloudWatch Logs turns into metrics with no API call. Namespace `Rotor`.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The metric namespace.
pub const NAMESPACE: &str = "Rotor";

/// Where metric lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Lambda: stdout, picked up by CloudWatch Logs.
    Stdout,
    /// Off (the CLI, unless `ROTOR_METRICS=stderr`).
    Off,
    /// The CLI with `ROTOR_METRICS=stderr`.
    Stderr,
}

/// Emits EMF lines.
#[derive(Debug, Clone)]
pub struct Metrics {
    sink: Sink,
    function: String,
}

impl Metrics {
    pub fn new(sink: Sink, function: impl Into<String>) -> Self {
        Metrics {
            sink,
            function: function.into(),
        }
    }

    /// One EMF document: `values` are (name, unit, value); dimensions are `Function` plus
    /// `extra` (e.g. `Step`).
    pub fn line(&self, values: &[(&str, &str, f64)], extra: &[(&str, &str)]) -> Value {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut dims = vec!["Function".to_string()];
        dims.extend(extra.iter().map(|(k, _)| k.to_string()));
        let mut doc = json!({
            "_aws": {
                "Timestamp": ts,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [dims],
                    "Metrics": values.iter().map(|(n, u, _)| json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
                }]
            },
            "Function": self.function,
        });
        for (k, v) in extra {
            doc[*k] = json!(v);
        }
        for (n, _, v) in values {
            doc[*n] = json!(v);
        }
        doc
    }

    /// Emits one EMF line (best effort: a full pipe never fails a rotation).
    pub fn emit(&self, values: &[(&str, &str, f64)], extra: &[(&str, &str)]) {
        let line = self.line(values, extra).to_string();
        let _ = match self.sink {
            Sink::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
            Sink::Stderr => writeln!(std::io::stderr().lock(), "{line}"),
            Sink::Off => Ok(()),
        };
    }

    /// A step's duration, by step.
    pub fn step(&self, step: &str, ms: f64, ok: bool) {
        self.emit(
            &[
                ("StepDuration", "Milliseconds", ms),
                ("StepFailed", "Count", if ok { 0.0 } else { 1.0 }),
            ],
            &[("Step", step)],
        );
    }

    /// A rotation's end: succeeded, failed, rolled back (counts of 0 or 1).
    pub fn rotation(&self, succeeded: bool, rolled_back: bool) {
        self.emit(
            &[
                (
                    "RotationsSucceeded",
                    "Count",
                    f64::from(u8::from(succeeded)),
                ),
                ("RotationsFailed", "Count", f64::from(u8::from(!succeeded))),
                (
                    "RotationsRolledBack",
                    "Count",
                    f64::from(u8::from(rolled_back)),
                ),
            ],
            &[],
        );
    }

    /// Identities due but not taken by a plan (backlog), and those overdue by more than an hour.
    pub fn plan(&self, leased: usize, overdue: usize) {
        self.emit(
            &[
                ("IdentitiesLeased", "Count", leased as f64),
                ("OverdueIdentities", "Count", overdue as f64),
            ],
            &[],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_shape() {
        let m = Metrics::new(Sink::Off, "rotate");
        let d = m.line(
            &[("StepDuration", "Milliseconds", 3.5)],
            &[("Step", "createSecret")],
        );
        let cw = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "Rotor");
        assert_eq!(cw["Dimensions"][0], json!(["Function", "Step"]));
        assert_eq!(cw["Metrics"][0]["Name"], "StepDuration");
        assert_eq!(d["StepDuration"], 3.5);
        assert_eq!(d["Step"], "createSecret");
        assert_eq!(d["Function"], "rotate");
        assert!(d["_aws"]["Timestamp"].as_u64().unwrap() > 0);
    }
}
