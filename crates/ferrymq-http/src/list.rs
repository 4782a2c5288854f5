//! List queries as `rabbit_mgmt_util` answers them: without `page` a bare array; with
//! `page` an object `{filtered_count, item_count, items, page, page_count, page_size,
//! total_count}` after filtering by `name` (a case-insensitive substring, or with
//! `use_regex=true` a case-insensitive unanchored regex; only when paged, as RabbitMQ),
//! `sort` (a dotted path; default the natural order), `sort_reverse`, and `columns` (a
//! comma-separated list of dotted paths kept in each item). `page_size` defaults to 100,
//! and must be 1..=500; a bad `page`, `page_size` or regex is a 400.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};

pub const DEFAULT_PAGE_SIZE: u64 = 100;
pub const MAX_PAGE_SIZE: u64 = 500;

/// A parsed list query.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub page: Option<u64>,
    pub page_size: u64,
    pub name: Option<String>,
    pub use_regex: bool,
    pub sort: Option<String>,
    pub sort_reverse: bool,
    pub columns: Option<Vec<String>>,
}

impl ListQuery {
    pub fn parse(q: &HashMap<String, String>) -> ApiResult<ListQuery> {
        let int = |key: &str| -> ApiResult<Option<u64>> {
            match q.get(key) {
                None => Ok(None),
                Some(s) => s
                    .trim()
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| ApiError::bad(format!("{key} must be a positive integer"))),
            }
        };
        let page = int("page")?;
        if page == Some(0) {
            return Err(ApiError::bad("page must be a positive integer"));
        }
        let page_size = int("page_size")?.unwrap_or(DEFAULT_PAGE_SIZE);
        if page_size == 0 || page_size > MAX_PAGE_SIZE {
            return Err(ApiError::bad(format!(
                "page_size must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        let flag = |key: &str| q.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let columns = q.get("columns").map(|c| {
            c.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        });
        Ok(ListQuery {
            page,
            page_size,
            name: q.get("name").filter(|n| !n.is_empty()).cloned(),
            use_regex: flag("use_regex"),
            sort: q.get("sort").filter(|s| !s.is_empty()).cloned(),
            sort_reverse: flag("sort_reverse"),
            columns: columns.filter(|c| !c.is_empty()),
        })
    }

    /// Filters, sorts, pages and projects `items` (each an object with a `name`).
    pub fn apply(&self, mut items: Vec<Value>) -> ApiResult<Value> {
        let total = items.len();
        if let (Some(page), Some(name)) = (self.page, &self.name) {
            let _ = page;
            if self.use_regex {
                let re = regex::RegexBuilder::new(name)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| ApiError::bad(format!("invalid regular expression: {e}")))?;
                items.retain(|i| i["name"].as_str().is_some_and(|n| re.is_match(n)));
            } else {
                let needle = name.to_lowercase();
                items.retain(|i| {
                    i["name"]
                        .as_str()
                        .is_some_and(|n| n.to_lowercase().contains(&needle))
                });
            }
        }
        if let Some(sort) = &self.sort {
            items.sort_by(|a, b| compare(lookup(a, sort), lookup(b, sort)));
        }
        if self.sort_reverse {
            items.reverse();
        }
        let filtered = items.len();
        let page = match self.page {
            None => {
                return Ok(Value::Array(
                    items.into_iter().map(|i| self.project(i)).collect(),
                ))
            }
            Some(p) => p,
        };
        let size = self.page_size as usize;
        let page_count = filtered.div_ceil(size);
        let start = (page as usize - 1).saturating_mul(size);
        let page_items: Vec<Value> = items
            .into_iter()
            .skip(start)
            .take(size)
            .map(|i| self.project(i))
            .collect();
        Ok(json!({
            "filtered_count": filtered,
            "item_count": page_items.len(),
            "items": page_items,
            "page": page,
            "page_count": page_count,
            "page_size": size,
            "total_count": total,
        }))
    }

    /// Like [`apply`](Self::apply) for items that are costly to render: filtering,
    /// sorting and paging work on stubs (`name` and, when the query sorts, the value
    /// `sort_value` gives for the sort path) and only the page's items are rendered (a
    /// page of 500 out of 10 000 queues renders 500). When `sort_value` does not know
    /// the sort path (`None`), or the query does not page, everything is rendered first.
    pub fn apply_lazy<T>(
        &self,
        items: Vec<T>,
        name: impl Fn(&T) -> &str,
        sort_value: impl Fn(&T, &str) -> Option<Value>,
        render: impl Fn(&T) -> Value,
    ) -> ApiResult<Value> {
        if self.page.is_none() {
            return self.apply(items.iter().map(render).collect());
        }
        let mut stubs = Vec::with_capacity(items.len());
        for (i, t) in items.iter().enumerate() {
            let mut stub = json!({"name": name(t), "\u{0}i": i});
            if let Some(sort) = self.sort.as_deref().filter(|s| *s != "name") {
                let Some(v) = sort_value(t, sort) else {
                    return self.apply(items.iter().map(render).collect());
                };
                if let Some(m) = stub.as_object_mut() {
                    insert_path(m, sort, v);
                }
            }
            stubs.push(stub);
        }
        let mut paged = self.clone();
        paged.columns = None;
        let mut out = paged.apply(stubs)?;
        if let Some(Value::Array(page)) = out.get_mut("items") {
            for v in page.iter_mut() {
                let i = v["\u{0}i"].as_u64().unwrap_or(0) as usize;
                if let Some(t) = items.get(i) {
                    *v = self.project(render(t));
                }
            }
        }
        Ok(out)
    }

    /// Keeps only the requested columns (dotted paths) of an item.
    fn project(&self, item: Value) -> Value {
        let Some(columns) = &self.columns else {
            return item;
        };
        let mut out = Map::new();
        for c in columns {
            if let Some(v) = lookup(&item, c) {
                insert_path(&mut out, c, v.clone());
            }
        }
        Value::Object(out)
    }
}

/// The value at a dotted path (`message_stats.publish_details.rate`).
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

fn insert_path(out: &mut Map<String, Value>, path: &str, v: Value) {
    match path.split_once('.') {
        None => {
            out.insert(path.to_owned(), v);
        }
        Some((head, rest)) => {
            let slot = out
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = slot {
                insert_path(m, rest, v);
            }
        }
    }
}

/// Missing values first, then numbers by value, strings case-insensitively, others by
/// their JSON text.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x
            .to_lowercase()
            .cmp(&y.to_lowercase())
            .then_with(|| x.cmp(y)),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> ApiResult<ListQuery> {
        ListQuery::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn items() -> Vec<Value> {
        vec![
            json!({"name": "orders", "messages": 5, "stats": {"rate": 1.5}}),
            json!({"name": "Audit", "messages": 50, "stats": {"rate": 0.5}}),
            json!({"name": "orders-dlq", "messages": 0}),
        ]
    }

    fn names(v: &Value) -> Vec<&str> {
        let arr = v.as_array().or_else(|| v["items"].as_array()).unwrap();
        arr.iter().map(|i| i["name"].as_str().unwrap()).collect()
    }

    #[test]
    fn unpaged_is_a_bare_array_and_ignores_name() {
        let v = q(&[("name", "orders"), ("pagination", "false")])
            .unwrap()
            .apply(items())
            .unwrap();
        assert_eq!(names(&v), ["orders", "Audit", "orders-dlq"]);
    }

    #[test]
    fn paged_filter_by_substring_and_regex() {
        let v = q(&[("page", "1"), ("name", "ORDERS")])
            .unwrap()
            .apply(items())
            .unwrap();
        assert_eq!(names(&v), ["orders", "orders-dlq"]);
        assert_eq!(v["filtered_count"], 2);
        assert_eq!(v["total_count"], 3);
        assert_eq!(v["page_count"], 1);
        assert_eq!(v["page_size"], 100);
        // KEDA's form.
        let v = q(&[
            ("page", "1"),
            ("use_regex", "true"),
            ("pagination", "false"),
            ("name", "^orders$"),
            ("page_size", "100"),
        ])
        .unwrap()
        .apply(items())
        .unwrap();
        assert_eq!(names(&v), ["orders"]);
        assert_eq!(v["page_count"], 1);
        assert!(q(&[("page", "1"), ("use_regex", "true"), ("name", "(")])
            .unwrap()
            .apply(items())
            .is_err());
    }

    #[test]
    fn sort_reverse_and_pages() {
        let v = q(&[("sort", "messages"), ("sort_reverse", "true")])
            .unwrap()
            .apply(items())
            .unwrap();
        assert_eq!(names(&v), ["Audit", "orders", "orders-dlq"]);
        let v = q(&[("sort", "name")]).unwrap().apply(items()).unwrap();
        assert_eq!(names(&v), ["Audit", "orders", "orders-dlq"]);
        let v = q(&[("sort", "stats.rate")])
            .unwrap()
            .apply(items())
            .unwrap();
        assert_eq!(names(&v), ["orders-dlq", "Audit", "orders"]);
        let v = q(&[("page", "2"), ("page_size", "2"), ("sort", "name")])
            .unwrap()
            .apply(items())
            .unwrap();
        assert_eq!(names(&v), ["orders-dlq"]);
        assert_eq!(
            (v["page"].as_u64(), v["page_count"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(v["item_count"], 1);
        let v = q(&[("page", "9")]).unwrap().apply(items()).unwrap();
        assert_eq!(v["item_count"], 0);
    }

    #[test]
    fn bad_paging_is_rejected() {
        assert!(q(&[("page_size", "501")]).is_err());
        assert!(q(&[("page_size", "0")]).is_err());
        assert!(q(&[("page_size", "x")]).is_err());
        assert!(q(&[("page", "0")]).is_err());
        assert!(q(&[("page", "-1")]).is_err());
        assert!(q(&[("page_size", "500")]).is_ok());
    }

    #[test]
    fn lazy_rendering_matches_eager() {
        let names = ["b", "a", "ab", "c"];
        let render = |n: &&str| json!({"name": n, "len": n.len()});
        for query in [
            vec![("page", "1"), ("page_size", "2"), ("sort", "name")],
            vec![("page", "2"), ("page_size", "1"), ("name", "a")],
            vec![("page", "1"), ("sort", "len"), ("sort_reverse", "true")],
            vec![("page", "1"), ("columns", "len")],
            vec![],
        ] {
            let lq = q(&query).unwrap();
            let eager = lq.apply(names.iter().map(render).collect()).unwrap();
            let known = |n: &&str, path: &str| (path == "len").then(|| json!(n.len()));
            let lazy = lq.apply_lazy(names.to_vec(), |n| n, known, render).unwrap();
            assert_eq!(eager, lazy, "{query:?}");
            let unknown = lq
                .apply_lazy(names.to_vec(), |n| n, |_, _| None, render)
                .unwrap();
            assert_eq!(eager, unknown, "{query:?}");
        }
    }

    #[test]
    fn columns_keep_dotted_paths() {
        let v = q(&[("columns", "name,stats.rate")])
            .unwrap()
            .apply(items())
            .unwrap();
        assert_eq!(v[0], json!({"name": "orders", "stats": {"rate": 1.5}}));
        assert_eq!(v[2], json!({"name": "orders-dlq"}));
    }
}
