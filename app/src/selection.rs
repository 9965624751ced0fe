//! Host selection for bulk actions: click toggles one host, shift-click selects the range
//! from the last clicked host. Plain logic, tested natively; the page keeps it in a signal.

use std::collections::BTreeSet;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    pub ids: BTreeSet<String>,
    anchor: Option<String>,
}

impl Selection {
    /// A click on `id`'s checkbox. `order` is the hosts in display order.
    pub fn click(&mut self, order: &[String], id: &str, shift: bool) {
        let range = shift
            .then(|| {
                let anchor = self.anchor.as_deref()?;
                let a = order.iter().position(|x| x == anchor)?;
                let b = order.iter().position(|x| x == id)?;
                Some(a.min(b)..=a.max(b))
            })
            .flatten();
        match range {
            // A range takes the state the anchor has.
            Some(range) => {
                let select = self.anchor.as_ref().is_some_and(|a| self.ids.contains(a));
                for x in &order[range] {
                    if select {
                        self.ids.insert(x.clone());
                    } else {
                        self.ids.remove(x);
                    }
                }
            }
            None => {
                if !self.ids.remove(id) {
                    self.ids.insert(id.to_owned());
                }
            }
        }
        self.anchor = Some(id.to_owned());
    }

    /// Forget hosts that are gone.
    pub fn retain(&mut self, order: &[String]) {
        self.ids.retain(|id| order.contains(id));
    }

    pub fn clear(&mut self) {
        self.ids.clear();
        self.anchor = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Vec<String> {
        ["a", "b", "c", "d", "e"].map(String::from).to_vec()
    }

    fn ids(s: &Selection) -> Vec<&str> {
        s.ids.iter().map(String::as_str).collect()
    }

    #[test]
    fn click_toggles_and_shift_selects_a_range() {
        let mut s = Selection::default();
        s.click(&order(), "b", false);
        assert_eq!(ids(&s), ["b"]);
        s.click(&order(), "d", true);
        assert_eq!(ids(&s), ["b", "c", "d"]);
        // Backwards ranges work too, anchored at the last click.
        s.click(&order(), "a", true);
        assert_eq!(ids(&s), ["a", "b", "c", "d"]);
        s.click(&order(), "c", false);
        assert_eq!(ids(&s), ["a", "b", "d"]);
        // The anchor (c) is now unselected: a shift range unselects.
        s.click(&order(), "e", true);
        assert_eq!(ids(&s), ["a", "b"]);
    }

    #[test]
    fn shift_without_anchor_is_a_plain_click() {
        let mut s = Selection::default();
        s.click(&order(), "c", true);
        assert_eq!(ids(&s), ["c"]);
        s.retain(&["a".to_owned()]);
        assert!(s.ids.is_empty());
    }
}
