//! Finding hosts by what a person types: a name or an id, `tag:NAME`, lists of them.

use super::client::{Exit, Failure, Result};
use protocol::Host;
use serde_json::Value;

/// A host as `ctl` reads it from `GET /api/hosts`: the contract's `Host`, and its `tags`,
/// read beside it so that a dashboard that does not send tags yet reads as "no tags".
#[derive(Clone, Debug, PartialEq)]
pub struct FleetHost {
    pub host: Host,
    pub tags: Vec<String>,
}

impl FleetHost {
    pub fn from_json(raw: &Value) -> Result<FleetHost> {
        let host: Host = serde_json::from_value(raw.clone()).map_err(|e| {
            Failure::new(
                Exit::Unreachable,
                format!("unexpected host in GET /api/hosts: {e}"),
            )
        })?;
        let tags = raw["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(FleetHost { host, tags })
    }
}

/// The one host `name` means: the host with that id, else the one whose hostname it is
/// (ignoring case). Two such hostnames are ambiguous; none is not found.
pub fn resolve<'a>(hosts: &'a [FleetHost], name: &str) -> Result<&'a FleetHost> {
    if let Some(h) = hosts.iter().find(|h| h.host.id == name) {
        return Ok(h);
    }
    let named: Vec<&FleetHost> = hosts
        .iter()
        .filter(|h| h.host.hostname.eq_ignore_ascii_case(name))
        .collect();
    match named[..] {
        [one] => Ok(one),
        [] => Err(Failure::new(
            Exit::NotFound,
            format!("unknown host `{name}`"),
        )),
        _ => Err(Failure::new(
            Exit::Usage,
            format!(
                "`{name}` is ambiguous: it is the hostname of {}; use an id",
                named
                    .iter()
                    .map(|h| h.host.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The ids of the hosts with any of `tags`, in the fleet's order. A tag no host has is
/// an error (a typo would otherwise deploy to fewer hosts than meant).
pub fn tagged(hosts: &[FleetHost], tags: &[String]) -> Result<Vec<String>> {
    for tag in tags {
        if !hosts.iter().any(|h| h.tags.contains(tag)) {
            return Err(Failure::new(
                Exit::NotFound,
                format!("no host has the tag `{tag}`"),
            ));
        }
    }
    Ok(hosts
        .iter()
        .filter(|h| h.tags.iter().any(|t| tags.contains(t)))
        .map(|h| h.host.id.clone())
        .collect())
}

/// Host ids for a list of names, ids and `tag:NAME`s, each once, in the order given.
pub fn select(hosts: &[FleetHost], items: &[String]) -> Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        let found = match item.strip_prefix("tag:") {
            Some(tag) => tagged(hosts, &[tag.to_owned()])?,
            None => vec![resolve(hosts, item)?.host.id.clone()],
        };
        for id in found {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::HostType;
    use serde_json::json;

    fn host(id: &str, hostname: &str, tags: &[&str]) -> FleetHost {
        let mut host = Host::new(id, HostType::Nixos);
        host.hostname = hostname.to_owned();
        FleetHost {
            host,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn fleet() -> Vec<FleetHost> {
        vec![
            host("web-1", "web-1", &["web", "canary"]),
            host("web-2", "Web-2", &["web"]),
            host("db-1", "db-1", &["db", "canary"]),
            host("old", "twin", &[]),
            host("new", "Twin", &[]),
        ]
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_host_is_found_by_id_or_hostname_and_never_guessed() {
        let f = fleet();
        assert_eq!(resolve(&f, "web-1").unwrap().host.id, "web-1");
        assert_eq!(resolve(&f, "web-2").unwrap().host.id, "web-2");
        assert_eq!(resolve(&f, "WEB-2").unwrap().host.id, "web-2");
        // An id wins over another host's hostname.
        assert_eq!(resolve(&f, "old").unwrap().host.id, "old");
        let twin = resolve(&f, "twin").unwrap_err();
        assert_eq!(twin.exit, Exit::Usage);
        assert!(twin.message.contains("old, new"), "{}", twin.message);
        let ghost = resolve(&f, "ghost").unwrap_err();
        assert_eq!(ghost.exit, Exit::NotFound);
        assert!(ghost.message.contains("ghost"));
        // Not a prefix match.
        assert_eq!(resolve(&f, "web").unwrap_err().exit, Exit::NotFound);
    }

    #[test]
    fn tags_select_every_host_with_any_of_them_in_fleet_order() {
        let f = fleet();
        assert_eq!(tagged(&f, &strings(&["web"])).unwrap(), ["web-1", "web-2"]);
        assert_eq!(
            tagged(&f, &strings(&["db", "web"])).unwrap(),
            ["web-1", "web-2", "db-1"]
        );
        let typo = tagged(&f, &strings(&["web", "wbe"])).unwrap_err();
        assert_eq!(typo.exit, Exit::NotFound);
        assert!(typo.message.contains("wbe"));
    }

    #[test]
    fn a_canary_list_mixes_tags_and_names_each_host_once() {
        let f = fleet();
        assert_eq!(
            select(&f, &strings(&["tag:canary"])).unwrap(),
            ["web-1", "db-1"]
        );
        assert_eq!(
            select(&f, &strings(&["web-2", "tag:canary", "web-1", " "])).unwrap(),
            ["web-2", "web-1", "db-1"]
        );
        assert_eq!(
            select(&f, &strings(&["tag:nope"])).unwrap_err().exit,
            Exit::NotFound
        );
        assert_eq!(
            select(&f, &strings(&["ghost"])).unwrap_err().exit,
            Exit::NotFound
        );
        assert!(select(&f, &[]).unwrap().is_empty());
    }

    #[test]
    fn hosts_without_a_tags_field_have_none() {
        let mut raw = serde_json::to_value(Host::new("a", HostType::Nixos)).unwrap();
        assert_eq!(
            FleetHost::from_json(&raw).unwrap().tags,
            Vec::<String>::new()
        );
        raw["tags"] = json!(["web", "eu"]);
        assert_eq!(FleetHost::from_json(&raw).unwrap().tags, ["web", "eu"]);
        let bad = FleetHost::from_json(&json!({"id": 3})).unwrap_err();
        assert_eq!(bad.exit, Exit::Unreachable);
    }
}
