//! The Prometheus text exposition format, version 0.0.4 (what rabbitmq_prometheus and
//! kafka_exporter serve): per family a `# HELP` and a `# TYPE` line, then one line per
//! sample, `name{label="value",…} value`. Pure: writes into a `String`; label values and
//! help texts are escaped as the format requires (`\\`, `\"`, `\n`).

use std::fmt::Write as _;

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Untyped,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Untyped => "untyped",
        }
    }
}

/// A sample value: integers are written exactly, floats in Prometheus' spelling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Signed(i64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Signed(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::Int(v as u64)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(u64::from(v))
    }
}

/// An exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn with_capacity(bytes: usize) -> Exposition {
        Exposition {
            out: String::with_capacity(bytes),
        }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        match value.into() {
            Value::Int(v) => {
                let _ = write!(self.out, "{v}");
            }
            Value::Signed(v) => {
                let _ = write!(self.out, "{v}");
            }
            Value::Float(v) => write_float(&mut self.out, v),
        }
        self.out.push('\n');
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Into<Value>) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label(out: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(build: impl FnOnce(&mut Exposition), expected: &str) {
        let mut e = Exposition::default();
        build(&mut e);
        assert_eq!(e.finish(), expected);
    }

    #[test]
    fn families_and_samples() {
        check(
            |e| {
                e.family("rabbitmq_queues", Kind::Gauge, "Queues available");
                e.sample("rabbitmq_queues", &[], 3u64);
            },
            "# HELP rabbitmq_queues Queues available\n# TYPE rabbitmq_queues gauge\nrabbitmq_queues 3\n",
        );
        check(
            |e| {
                e.family("x_total", Kind::Counter, "h");
                e.sample("x_total", &[("vhost", "/"), ("queue", "q")], 7u64);
                e.sample("x_total", &[("vhost", "/"), ("queue", "r")], -2i64);
            },
            "# HELP x_total h\n# TYPE x_total counter\nx_total{vhost=\"/\",queue=\"q\"} 7\nx_total{vhost=\"/\",queue=\"r\"} -2\n",
        );
        check(
            |e| e.single("i", Kind::Untyped, "RabbitMQ & Erlang/OTP", true),
            "# HELP i RabbitMQ & Erlang/OTP\n# TYPE i untyped\ni 1\n",
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        check(
            |e| e.sample("m", &[("queue", "a\"b\\c\nd")], 1u64),
            "m{queue=\"a\\\"b\\\\c\\nd\"} 1\n",
        );
        check(
            |e| e.family("m", Kind::Gauge, "two\nlines \\ and \"quotes\""),
            "# HELP m two\\nlines \\\\ and \"quotes\"\n# TYPE m gauge\n",
        );
        // Unicode passes through as UTF-8.
        check(
            |e| e.sample("m", &[("queue", "очередь")], 0u64),
            "m{queue=\"очередь\"} 0\n",
        );
    }

    #[test]
    fn floats_in_prometheus_spelling() {
        check(
            |e| {
                e.sample("a", &[], 1.5f64);
                e.sample("b", &[], 2.0f64);
                e.sample("c", &[], f64::NAN);
                e.sample("d", &[], f64::INFINITY);
                e.sample("e", &[], f64::NEG_INFINITY);
                e.sample("f", &[], 1e-7f64);
            },
            "a 1.5\nb 2.0\nc NaN\nd +Inf\ne -Inf\nf 1e-7\n",
        );
    }
}
