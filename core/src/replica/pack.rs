//! Items into notification payloads: `{"from": …, "seq": n, "items": [...]}`, each under
//! PostgreSQL's payload limit. The items are JSON texts already (the hub serialises each
//! event once, for its browsers); they are joined, not parsed again.

/// PostgreSQL refuses a NOTIFY payload of this many bytes or more (its default build's
/// `NOTIFY_PAYLOAD_MAX_LENGTH`, 8000, counting a terminating zero).
pub const NOTIFY_LIMIT: usize = 8000;

fn header(from: &str, seq: u64) -> String {
    let from = serde_json::to_string(from).unwrap_or_else(|_| "\"\"".into());
    format!("{{\"from\":{from},\"seq\":{seq},\"items\":[")
}

/// The largest item that fits a notification on its own (with the longest header): a
/// larger one goes into `bus_events` and travels as its row id.
pub fn max_item(from: &str) -> usize {
    NOTIFY_LIMIT - 1 - header(from, u64::MAX).len() - "]}".len()
}

/// The payloads for `items`, in order, as few as fit: each with the next sequence number
/// after `last_seq`, and that number. Every item must be at most `max_item` bytes.
pub fn pack(from: &str, last_seq: u64, items: Vec<String>) -> Vec<(String, u64)> {
    let budget = max_item(from);
    let mut out = Vec::new();
    let mut seq = last_seq;
    let mut body = String::new();
    for item in items {
        debug_assert!(item.len() <= budget, "an item over max_item");
        if !body.is_empty() && body.len() + 1 + item.len() > budget {
            seq += 1;
            out.push((format!("{}{body}]}}", header(from, seq)), seq));
            body.clear();
        }
        if !body.is_empty() {
            body.push(',');
        }
        body.push_str(&item);
    }
    if !body.is_empty() {
        seq += 1;
        out.push((format!("{}{body}]}}", header(from, seq)), seq));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::BusItem;

    /// A heartbeat item as the hub writes it (`{"e": event}`, the event as browsers get it).
    fn heartbeat(i: usize) -> String {
        let event = protocol::BrowserEvent::HostHeartbeat(protocol::messages::HostHeartbeat {
            host_id: format!("host-{i:05}"),
            online: true,
            last_seen: protocol::Timestamp(1_765_000_000 + i as i64),
            metrics: Some(protocol::Metrics {
                cpu: 12.5,
                ram: 40.1,
                swap: 0.0,
                load: 0.42,
                disk: Some(71.0),
            }),
        });
        format!("{{\"e\":{}}}", serde_json::to_string(&event).unwrap())
    }

    /// A second's heartbeats of 1 000 hosts: every payload under the limit, far fewer
    /// payloads than events, consecutive sequence numbers, and every item back, in order.
    #[test]
    fn heartbeats_share_payloads_under_the_limit() {
        let items: Vec<String> = (0..1000).map(heartbeat).collect();
        let total: usize = items.iter().map(String::len).sum();
        let packed = pack("1234-abcdef01", 41, items);
        assert!(
            packed.len() < 1000 / 20,
            "{} payloads for 1000 heartbeats",
            packed.len()
        );
        assert!(
            packed.len() >= total / NOTIFY_LIMIT,
            "no payload can hold more than the limit"
        );
        let mut next = 41;
        let mut hosts = Vec::new();
        for (payload, seq) in &packed {
            assert!(
                payload.len() < NOTIFY_LIMIT,
                "payload of {} bytes",
                payload.len()
            );
            next += 1;
            assert_eq!(*seq, next);
            let v: serde_json::Value = serde_json::from_str(payload).unwrap();
            assert_eq!(v["from"], "1234-abcdef01");
            assert_eq!(v["seq"], next);
            for item in v["items"].as_array().unwrap() {
                let item: BusItem = serde_json::from_value(item.clone()).unwrap();
                let BusItem::E(event) = item else {
                    panic!("not an event: {item:?}");
                };
                let protocol::BrowserEvent::HostHeartbeat(hb) = *event else {
                    panic!("not a heartbeat: {event:?}");
                };
                hosts.push(hb.host_id);
            }
        }
        let expected: Vec<String> = (0..1000).map(|i| format!("host-{i:05}")).collect();
        assert_eq!(hosts, expected);
    }

    /// An item of exactly `max_item` bytes fits a payload alone; the writer sends anything
    /// larger through the table (`write`), and `max_item` is what it compares with.
    #[test]
    fn the_largest_item_fits_alone_and_one_more_byte_would_not() {
        let from = "99999-ffffffff";
        let max = max_item(from);
        let filler = |n: usize| format!(r#"{{"own":"{}"}}"#, "h".repeat(n - 10));
        let item = filler(max);
        assert_eq!(item.len(), max);
        let packed = pack(from, u64::MAX - 2, vec![item.clone(), item]);
        assert_eq!(packed.len(), 2, "two of them do not share one");
        for (payload, _) in &packed {
            assert!(payload.len() < NOTIFY_LIMIT, "{}", payload.len());
        }
        assert_eq!(
            packed[1].0.len(),
            NOTIFY_LIMIT - 1,
            "the limit is met exactly"
        );
    }

    #[test]
    fn nothing_to_send_is_no_payload() {
        assert!(pack("a", 3, Vec::new()).is_empty());
    }
}
