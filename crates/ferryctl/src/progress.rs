//! `ferryctl migrate status`: one row per federated queue with both sides of the
//! move and the phase it reached — consumers moved, producers moved, drained — read
//! from the new broker alone (its links probe the old queues).

use crate::api::{Api, Failure};
use crate::table::{self, cell, field};
use crate::{items, Conn};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// The phases in order; a queue's phase is the last one it reached.
pub const PHASES: [&str; 4] = [
    "waiting for consumers",
    "consumers moved",
    "producers moved",
    "drained",
];

/// Phase index of one link and its local queue (see `PHASES`).
pub fn phase(link: &Value, queue: &Value) -> usize {
    let here = queue["consumers"].as_u64().unwrap_or(0);
    let there = link["upstream_consumers"].as_u64().unwrap_or(u64::MAX);
    if here == 0 || there > 0 {
        return 0;
    }
    match link["upstream_inflow_rate"].as_f64() {
        Some(r) if r <= 0.0 => {}
        _ => return 1,
    }
    if link["upstream_messages"].as_u64().unwrap_or(u64::MAX) > 0 {
        return 2;
    }
    3
}

/// Transfer counters from the previous sample, for rates.
type Previous = HashMap<String, (u64, Instant)>;

fn sample(new: &Api, previous: &mut Previous) -> Result<Vec<Value>, Failure> {
    let links = items(new.get("/api/federation-links")?);
    let queues: HashMap<(String, String), Value> = items(new.get("/api/queues")?)
        .into_iter()
        .map(|q| ((cell(&q["vhost"]), cell(&q["name"])), q))
        .collect();
    let now = Instant::now();
    Ok(links
        .iter()
        .map(|l| {
            let q = queues
                .get(&(cell(&l["vhost"]), cell(&l["queue"])))
                .cloned()
                .unwrap_or(Value::Null);
            let moved = l["messages_transferred"].as_u64().unwrap_or(0);
            let key = format!("{}\0{}", cell(&l["vhost"]), cell(&l["id"]));
            let rate = previous.get(&key).map(|(before, at)| {
                let secs = now.duration_since(*at).as_secs_f64().max(0.001);
                (moved.saturating_sub(*before) as f64 / secs * 10.0).round() / 10.0
            });
            previous.insert(key, (moved, now));
            let left = l["upstream_messages"].as_u64();
            let progress = left.map(|left| (moved * 100).checked_div(moved + left).unwrap_or(100));
            let p = phase(l, &q);
            json!({
                "vhost": l["vhost"],
                "queue": l["queue"],
                "upstream": l["upstream"],
                "link": l["status"],
                "error": l["error"],
                "upstream_messages": l["upstream_messages"],
                "upstream_consumers": l["upstream_consumers"],
                "upstream_inflow_rate": l["upstream_inflow_rate"],
                "messages": q["messages"],
                "consumers": q["consumers"],
                "inflow_rate": field(&q, "message_stats.publish_details.rate"),
                "messages_transferred": moved,
                "transfer_rate": rate,
                "progress_percent": progress,
                "phase": PHASES[p],
                "phase_index": p,
            })
        })
        .collect())
}

fn bar(percent: Option<u64>) -> String {
    match percent {
        Some(p) => {
            let filled = (p.min(100) / 5) as usize;
            format!(
                "[{}{}] {p:>3}%",
                "#".repeat(filled),
                ".".repeat(20 - filled)
            )
        }
        None => format!("[{}]   ?", " ".repeat(20)),
    }
}

fn rate(v: &Value) -> String {
    v.as_f64().map(|r| format!("{r:.1}/s")).unwrap_or_default()
}

fn render(rows: &[Value]) -> String {
    let overall = rows.iter().filter_map(|r| r["phase_index"].as_u64()).min();
    let drained = rows.iter().filter(|r| r["phase_index"] == 3).count();
    let mut out = String::new();
    match overall {
        None => out.push_str("no federation links: nothing is being migrated\n"),
        Some(p) => out.push_str(&format!(
            "phase: {}   ({drained} of {} queues drained)\n\n",
            PHASES[p as usize],
            rows.len()
        )),
    }
    let headers = [
        "queue", "link", "left up", "cons up", "in up", "depth", "cons", "in", "moved", "rate",
        "progress", "phase",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let link = match r["error"].as_str() {
                Some(e) => format!("{} ({e})", cell(&r["link"])),
                None => cell(&r["link"]),
            };
            vec![
                format!("{}/{}", cell(&r["vhost"]), cell(&r["queue"])),
                link,
                cell(&r["upstream_messages"]),
                cell(&r["upstream_consumers"]),
                rate(&r["upstream_inflow_rate"]),
                cell(&r["messages"]),
                cell(&r["consumers"]),
                rate(&r["inflow_rate"]),
                cell(&r["messages_transferred"]),
                rate(&r["transfer_rate"]),
                bar(r["progress_percent"].as_u64()),
                cell(&r["phase"]),
            ]
        })
        .collect();
    if !body.is_empty() {
        out.push_str(&table::render(&headers, &body));
    }
    out
}

/// Prints the status once (rates over one second), every `watch` seconds, or until
/// every federated queue is drained (`until`: the time limit).
pub fn run(
    conn: &Conn,
    new: &Api,
    watch: Option<u64>,
    until: Option<Duration>,
) -> Result<(), Failure> {
    let mut previous = Previous::new();
    let started = Instant::now();
    let every = Duration::from_secs(watch.unwrap_or(2).max(1));
    let redraw = watch.is_some() && std::io::stdout().is_terminal() && !conn.json;
    // One sample before the first print so the transfer rate has a baseline.
    sample(new, &mut previous)?;
    std::thread::sleep(if watch.is_some() || until.is_some() {
        every.min(Duration::from_secs(1))
    } else {
        Duration::from_secs(1)
    });
    loop {
        let rows = sample(new, &mut previous)?;
        if conn.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        } else {
            if redraw {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&rows));
        }
        let all_drained = !rows.is_empty() && rows.iter().all(|r| r["phase_index"] == 3);
        match until {
            Some(_) if all_drained => return Ok(()),
            Some(limit) if started.elapsed() >= limit => {
                let pending: Vec<String> = rows
                    .iter()
                    .filter(|r| r["phase_index"] != 3)
                    .map(|r| format!("{} ({})", cell(&r["queue"]), cell(&r["phase"])))
                    .collect();
                return Err(Failure::Refused(format!(
                    "not drained after {} s: {}",
                    limit.as_secs(),
                    if pending.is_empty() {
                        "no federation links".to_string()
                    } else {
                        pending.join(", ")
                    }
                )));
            }
            Some(_) => {}
            None if watch.is_none() => return Ok(()),
            None => {}
        }
        if !redraw && !conn.json {
            println!();
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_migration() {
        let q = |consumers: u64| json!({"consumers": consumers});
        let l = |others: u64, inflow: Option<f64>, left: u64| json!({"upstream_consumers": others, "upstream_inflow_rate": inflow, "upstream_messages": left});
        assert_eq!(phase(&l(0, Some(0.0), 0), &q(0)), 0, "no consumer here yet");
        assert_eq!(
            phase(&l(1, Some(0.0), 0), &q(1)),
            0,
            "a consumer still upstream"
        );
        assert_eq!(
            phase(&l(0, Some(5.0), 10), &q(1)),
            1,
            "producers still upstream"
        );
        assert_eq!(phase(&l(0, None, 10), &q(1)), 1, "not probed yet");
        assert_eq!(phase(&l(0, Some(0.0), 10), &q(1)), 2, "backlog left");
        assert_eq!(phase(&l(0, Some(0.0), 0), &q(1)), 3);
        assert_eq!(
            phase(&json!({}), &q(1)),
            0,
            "no probe: unknown upstream consumers"
        );
    }

    #[test]
    fn progress_bar() {
        assert_eq!(bar(Some(50)), "[##########..........]  50%");
        assert_eq!(bar(Some(100)), "[####################] 100%");
    }
}
