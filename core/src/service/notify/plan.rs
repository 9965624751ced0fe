//! The pure parts of notifying, with the time passed in: quiet hours, grouping and
//! cooldown, and the retry delays.

use protocol::api::QuietHours;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

/// Events of one rule this close together become one message.
pub const GROUP_MS: i64 = 5_000;
/// The first retry comes after about this long, doubling up to the cap
/// (`NIXDECK_NOTIFY_RETRY_MAX_S`, 300 s by default).
pub const RETRY_BASE_MS: u64 = 1_000;

/// The delay before attempt `attempt + 1` (`attempt` ≥ 1 failed ones): exponential with
/// equal jitter, so between half the ceiling and the ceiling. `unit` is in [0, 1).
pub fn retry_delay_ms(attempt: u32, unit: f64, cap_ms: u64) -> u64 {
    let exp = RETRY_BASE_MS.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let ceiling = exp.min(cap_ms);
    ceiling / 2 + ((ceiling / 2) as f64 * unit.clamp(0.0, 1.0)) as u64
}

/// Quiet hours as minutes of the UTC day; `from == to` is never quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quiet {
    from: i64,
    to: i64,
}

impl Quiet {
    pub fn parse(q: &QuietHours) -> Result<Quiet, String> {
        let minutes = |s: &str| -> Option<i64> {
            let (h, m) = s.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
        };
        match (minutes(&q.from), minutes(&q.to)) {
            (Some(from), Some(to)) => Ok(Quiet { from, to }),
            _ => Err(format!(
                "Quiet hours are `HH:MM` in UTC, e.g. {{\"from\": \"22:00\", \"to\": \"07:00\"}}; got {:?} to {:?}.",
                q.from, q.to
            )),
        }
    }

    /// When the quiet hours that hold `now_s` end (Unix seconds); None outside them.
    pub fn ends_after(&self, now_s: i64) -> Option<i64> {
        let day = now_s.div_euclid(86_400) * 86_400;
        let minute = (now_s - day) / 60;
        let inside = if self.from < self.to {
            (self.from..self.to).contains(&minute)
        } else if self.from > self.to {
            minute >= self.from || minute < self.to
        } else {
            false
        };
        if !inside {
            return None;
        }
        let end = day + self.to * 60;
        Some(if end > now_s { end } else { end + 86_400 })
    }
}

/// A message taking shape: the hosts (and details) of one rule's events within `GROUP_MS`.
#[derive(Debug, Default)]
pub struct Group {
    pub hosts: BTreeSet<String>,
    pub details: Vec<Value>,
    opened_ms: i64,
}

/// Groups events per rule and leaves out what is in cooldown.
#[derive(Debug, Default)]
pub struct Grouper {
    open: HashMap<String, Group>,
    /// When a (rule, key) was last sent.
    sent: HashMap<(String, String), i64>,
}

impl Grouper {
    /// An event of `rule` about `key` (a host id, or a deploy job), naming `hosts`.
    /// False when the key is in the rule's cooldown (`cooldown_ms` since it was last sent).
    pub fn offer(
        &mut self,
        rule: &str,
        key: &str,
        hosts: &[String],
        detail: Value,
        cooldown_ms: i64,
        now_ms: i64,
    ) -> bool {
        if let Some(at) = self.sent.get(&(rule.to_owned(), key.to_owned())) {
            if now_ms - at < cooldown_ms {
                return false;
            }
        }
        self.sent.insert((rule.to_owned(), key.to_owned()), now_ms);
        let group = self.open.entry(rule.to_owned()).or_insert_with(|| Group {
            opened_ms: now_ms,
            ..Group::default()
        });
        group.hosts.extend(hosts.iter().cloned());
        group.details.push(detail);
        true
    }

    /// The groups whose window has passed, by rule id; forgets cooldowns older than
    /// `forget_ms`.
    pub fn due(&mut self, now_ms: i64, forget_ms: i64) -> Vec<(String, Group)> {
        let ripe: Vec<String> = self
            .open
            .iter()
            .filter(|(_, g)| now_ms - g.opened_ms >= GROUP_MS)
            .map(|(rule, _)| rule.clone())
            .collect();
        self.sent.retain(|_, at| now_ms - *at < forget_ms);
        ripe.into_iter()
            .filter_map(|rule| self.open.remove(&rule).map(|g| (rule, g)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hosts(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn forty_hosts_at_once_are_one_message() {
        let mut g = Grouper::default();
        for i in 0..40 {
            let id = format!("web-{i:02}");
            assert!(g.offer(
                "r1",
                &id,
                std::slice::from_ref(&id),
                json!({}),
                0,
                1_000 + i
            ));
        }
        assert!(g.due(1_000 + GROUP_MS - 1, 1 << 40).is_empty());
        let due = g.due(1_000 + GROUP_MS + 40, 1 << 40);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.hosts.len(), 40);
        assert!(g.due(1_000_000, 1 << 40).is_empty(), "sent once");
    }

    #[test]
    fn rules_group_apart() {
        let mut g = Grouper::default();
        g.offer("a", "h1", &hosts(&["h1"]), json!({}), 0, 0);
        g.offer("b", "h1", &hosts(&["h1"]), json!({}), 0, 0);
        assert_eq!(g.due(GROUP_MS, 1 << 40).len(), 2);
    }

    #[test]
    fn cooldown_leaves_a_host_out_until_it_passes() {
        let mut g = Grouper::default();
        assert!(g.offer("r", "h1", &hosts(&["h1"]), json!({}), 60_000, 0));
        g.due(GROUP_MS, 1 << 40);
        assert!(!g.offer("r", "h1", &hosts(&["h1"]), json!({}), 60_000, 30_000));
        assert!(
            g.offer("r", "h2", &hosts(&["h2"]), json!({}), 60_000, 30_000),
            "others pass"
        );
        assert!(g.offer("r", "h1", &hosts(&["h1"]), json!({}), 60_000, 60_000));
        let due = g.due(60_000 + GROUP_MS, 1 << 40);
        assert_eq!(due[0].1.hosts, ["h1".to_owned(), "h2".to_owned()].into());
    }

    #[test]
    fn quiet_hours_hold_until_they_end() {
        let night = Quiet::parse(&QuietHours {
            from: "22:00".into(),
            to: "07:00".into(),
        })
        .unwrap();
        let day0 = 20_000 * 86_400;
        assert_eq!(night.ends_after(day0 + 12 * 3600), None);
        assert_eq!(
            night.ends_after(day0 + 23 * 3600),
            Some(day0 + 86_400 + 7 * 3600)
        );
        assert_eq!(night.ends_after(day0 + 3 * 3600), Some(day0 + 7 * 3600));
        assert_eq!(
            night.ends_after(day0 + 7 * 3600),
            None,
            "the end is not quiet"
        );
        let lunch = Quiet::parse(&QuietHours {
            from: "12:00".into(),
            to: "13:30".into(),
        })
        .unwrap();
        assert_eq!(
            lunch.ends_after(day0 + 12 * 3600 + 5),
            Some(day0 + 13 * 3600 + 1800)
        );
        assert_eq!(lunch.ends_after(day0 + 14 * 3600), None);
        for bad in ["7:00", "24:00", "12:60", "noon", ""] {
            assert!(Quiet::parse(&QuietHours {
                from: bad.into(),
                to: "07:00".into()
            })
            .is_err());
        }
    }

    #[test]
    fn retries_back_off_with_jitter_up_to_the_cap() {
        const CAP: u64 = 300_000;
        assert_eq!(retry_delay_ms(1, 0.0, CAP), 500);
        assert_eq!(retry_delay_ms(1, 0.999_999, CAP), 999);
        assert_eq!(retry_delay_ms(2, 0.0, CAP), 1_000);
        assert_eq!(retry_delay_ms(4, 0.0, CAP), 4_000);
        assert_eq!(retry_delay_ms(30, 0.0, CAP), CAP / 2);
        assert!(retry_delay_ms(60, 1.0, CAP) <= CAP);
        // A lower cap (NIXDECK_NOTIFY_RETRY_MAX_S) bounds the wait after a long outage.
        assert_eq!(retry_delay_ms(9, 0.0, 10_000), 5_000);
        assert!(retry_delay_ms(9, 1.0, 10_000) <= 10_000);
    }
}
