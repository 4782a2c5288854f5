//! Readable output of `ferrymq admin`: JSON rows as an aligned text table (columns
//! picked by dotted paths), numbers right-aligned.

use serde_json::Value;

/// A column: its header and the dotted path of the value in each row.
pub struct Column {
    pub header: &'static str,
    pub path: &'static str,
}

pub const fn col(header: &'static str, path: &'static str) -> Column {
    Column { header, path }
}

/// The value at a dotted path (`message_stats.publish`), `Null` if absent.
pub fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for part in path.split('.') {
        cur = match cur.get(part) {
            Some(x) => x,
            None => return &Value::Null,
        };
    }
    cur
}

/// A cell's text: strings bare, arrays joined by commas, objects as compact JSON,
/// nothing for null.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(o) if o.is_empty() => String::new(),
        other => other.to_string(),
    }
}

/// Renders `rows` as a table (headers, a rule, one line per row; trailing spaces cut).
pub fn render(columns: &[Column], rows: &[Value]) -> String {
    let cells: Vec<Vec<(String, bool)>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| {
                    let v = at(r, c.path);
                    (cell(v), v.is_number())
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.header.chars().count()).collect();
    for row in &cells {
        for (i, (text, _)) in row.iter().enumerate() {
            widths[i] = widths[i].max(text.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: Vec<(String, bool)>| {
        let mut l = String::new();
        for (i, (text, right)) in cols.into_iter().enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let pad = widths[i].saturating_sub(text.chars().count());
            if right {
                l.push_str(&" ".repeat(pad));
                l.push_str(&text);
            } else {
                l.push_str(&text);
                l.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(
        columns
            .iter()
            .map(|c| (c.header.to_owned(), false))
            .collect(),
    );
    line(widths.iter().map(|w| ("-".repeat(*w), false)).collect());
    for row in cells {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aligns_columns_and_right_aligns_numbers() {
        let rows = vec![
            json!({"name": "orders", "messages": 12, "stats": {"rate": 1.5}, "tags": ["a", "b"]}),
            json!({"name": "q", "messages": 3}),
        ];
        let t = render(
            &[
                col("name", "name"),
                col("messages", "messages"),
                col("rate", "stats.rate"),
                col("tags", "tags"),
            ],
            &rows,
        );
        assert_eq!(
            t,
            "name    messages  rate  tags\n\
             ------  --------  ----  ----\n\
             orders        12   1.5  a,b\n\
             q              3\n"
        );
    }

    #[test]
    fn missing_values_are_blank_and_paths_nest() {
        let v = json!({"a": {"b": {"c": 7}}});
        assert_eq!(at(&v, "a.b.c"), &json!(7));
        assert_eq!(at(&v, "a.x.c"), &Value::Null);
        assert_eq!(cell(&Value::Null), "");
        assert_eq!(cell(&json!(true)), "true");
        assert_eq!(render(&[col("x", "x")], &[]), "x\n-\n");
    }
}
