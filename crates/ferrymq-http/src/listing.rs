//! RabbitMQ's list query parameters: `name` + `use_regex` filtering, `sort` +
//! `sort_reverse`, `page` + `page_size` pagination and `columns` projection.

use crate::error::{ApiError, ApiResult};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::cmp::Ordering;

/// Query parameters accepted by every list endpoint.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Name filter (substring, or a regex with `use_regex=true`).
    pub name: Option<String>,
    /// Treat `name` as a regex.
    pub use_regex: Option<String>,
    /// Field to sort by (dotted paths allowed).
    pub sort: Option<String>,
    /// Reverse the sort.
    pub sort_reverse: Option<String>,
    /// 1-based page number; asking for a page turns the answer into a page object.
    pub page: Option<String>,
    /// Items per page (default 100, at most 500).
    pub page_size: Option<String>,
    /// Comma-separated fields to keep.
    pub columns: Option<String>,
}

fn is_true(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| s == "true")
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, key| cur.get(key))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
        (None, None) => Ordering::Equal,
    }
}

/// Keeps only the dotted `columns` of an object.
pub fn project(item: &Value, columns: &[&str]) -> Value {
    let mut out = Map::new();
    for col in columns {
        let Some(found) = lookup(item, col) else {
            continue;
        };
        let mut slot = &mut out;
        let parts: Vec<&str> = col.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                slot.insert((*part).to_owned(), found.clone());
            } else {
                let next = slot
                    .entry((*part).to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !next.is_object() {
                    *next = Value::Object(Map::new());
                }
                slot = next.as_object_mut().expect("just made an object");
            }
        }
    }
    Value::Object(out)
}

fn parse_positive(v: &Option<String>, what: &str, default: usize) -> ApiResult<usize> {
    match v {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "{what} must be a positive integer, not '{s}'"
            ))),
        },
    }
}

/// Applies the query to a list of objects; returns a JSON array, or RabbitMQ's page
/// object when `page` is given. Items are sorted by `sort_key` by default.
pub fn respond(mut items: Vec<Value>, q: &ListQuery, default_sort: &[&str]) -> ApiResult<Value> {
    let total = items.len();
    if let Some(name) = q.name.as_deref().filter(|n| !n.is_empty()) {
        if is_true(&q.use_regex) {
            let re = regex::Regex::new(name)
                .map_err(|e| ApiError::bad_request(format!("invalid regex '{name}': {e}")))?;
            items.retain(|i| {
                i.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| re.is_match(n))
            });
        } else {
            // RabbitMQ's plain filter is a case-insensitive substring match.
            let needle = name.to_lowercase();
            items.retain(|i| {
                i.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.to_lowercase().contains(&needle))
            });
        }
    }
    let filtered = items.len();
    match q.sort.as_deref().filter(|s| !s.is_empty()) {
        Some(key) => items.sort_by(|a, b| compare(lookup(a, key), lookup(b, key))),
        None => items.sort_by(|a, b| {
            default_sort
                .iter()
                .map(|k| compare(lookup(a, k), lookup(b, k)))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        }),
    }
    if is_true(&q.sort_reverse) {
        items.reverse();
    }
    let columns: Vec<&str> = q
        .columns
        .as_deref()
        .map(|c| {
            c.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let shape = |items: Vec<Value>| -> Vec<Value> {
        if columns.is_empty() {
            items
        } else {
            items.iter().map(|i| project(i, &columns)).collect()
        }
    };
    if q.page.is_none() {
        return Ok(Value::Array(shape(items)));
    }
    let page = parse_positive(&q.page, "page", 1)?;
    let page_size = parse_positive(&q.page_size, "page_size", 100)?;
    if page_size > 500 {
        return Err(ApiError::bad_request("page_size must not exceed 500"));
    }
    let page_count = filtered.div_ceil(page_size).max(1);
    if page > page_count {
        return Err(ApiError::bad_request(format!(
            "page {page} is out of range (there are {page_count} pages)"
        )));
    }
    let chunk: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .collect();
    Ok(json!({
        "filtered_count": filtered,
        "item_count": chunk.len(),
        "items": shape(chunk),
        "page": page,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &Value) -> Vec<String> {
        let items = v.get("items").unwrap_or(v);
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn filters_sorts_and_pages() {
        let items: Vec<Value> = ["b", "a2", "a1", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"name": n, "messages": i}))
            .collect();
        let q = ListQuery {
            name: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(
            names(&respond(items.clone(), &q, &["name"]).unwrap()),
            ["a1", "a2"]
        );
        let q = ListQuery {
            sort: Some("messages".into()),
            sort_reverse: Some("true".into()),
            page: Some("1".into()),
            page_size: Some("3".into()),
            columns: Some("name".into()),
            ..Default::default()
        };
        let page = respond(items.clone(), &q, &["name"]).unwrap();
        assert_eq!(names(&page), ["c", "a1", "a2"]);
        assert_eq!(page["page_count"], 2);
        assert_eq!(page["total_count"], 4);
        assert!(page["items"][0].get("messages").is_none());
        let q = ListQuery {
            name: Some("^a[0-9]$".into()),
            use_regex: Some("true".into()),
            ..Default::default()
        };
        assert_eq!(
            names(&respond(items.clone(), &q, &["name"]).unwrap()).len(),
            2
        );
        let q = ListQuery {
            page: Some("9".into()),
            ..Default::default()
        };
        assert!(respond(items, &q, &["name"]).is_err());
    }

    #[test]
    fn projects_nested_columns() {
        let v = json!({"name": "q", "message_stats": {"publish": 3, "ack": 1}});
        assert_eq!(
            project(&v, &["name", "message_stats.publish"]),
            json!({"name": "q", "message_stats": {"publish": 3}})
        );
    }
}
