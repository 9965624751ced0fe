//! Which slice of the host list exists in the page. The dashboard renders only the hosts in
//! view plus a margin, on the server and in the browser, so a 10 000-host fleet costs the
//! page what about fifty hosts do (issue 7, P4); spacers above and below stand in for the
//! rest so the scrollbar stays true to the whole fleet. Pure arithmetic, tested here; the
//! component in `components/host_list.rs` only measures and applies it.

/// Rows the server renders and the browser hydrates before it has measured anything: a
/// tall viewport's worth (30 × 45 px), and few enough to keep a server render cheap (P4).
pub const FIRST_ROWS: usize = 30;
/// The least the window holds once the browser has measured, so a small fleet is always
/// rendered whole.
pub const MIN_ROWS: usize = 50;
/// Rows kept beyond each edge of the viewport, so scrolling rarely shows a blank.
pub const OVERSCAN: usize = 15;
/// A row's height before the browser has measured one (the table's CSS row: 14 px text,
/// 1.45 line height, padded buttons). Only the first spacer guess depends on it.
pub const ROW_ESTIMATE_PX: f64 = 45.0;

/// Hosts `start..start + len` of the display order are rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListWindow {
    pub start: usize,
    pub len: usize,
}

impl ListWindow {
    /// What the server renders and the browser hydrates: the top of the list.
    pub const INITIAL: ListWindow = ListWindow {
        start: 0,
        len: FIRST_ROWS,
    };

    /// The first window of a page built in the browser, which knows its viewport before
    /// anything is measured: the rows it would measure a frame later (P4), not `INITIAL`'s
    /// fixed 30, which exist only so that server and hydration agree.
    pub fn first_in(viewport_px: f64) -> ListWindow {
        ListWindow::around(0, 0.0, viewport_px, ROW_ESTIMATE_PX)
    }

    /// The window for a list of `total` rows of `row_px` each whose top edge is
    /// `scrolled_px` above the viewport's top (negative while the list starts lower down),
    /// in a viewport `viewport_px` high.
    pub fn around(total: usize, scrolled_px: f64, viewport_px: f64, row_px: f64) -> ListWindow {
        let row_px = if row_px.is_finite() && row_px >= 1.0 {
            row_px
        } else {
            ROW_ESTIMATE_PX
        };
        let rows = |px: f64| (px.max(0.0) / row_px) as usize;
        let in_view = rows(viewport_px).saturating_add(1);
        let len = (in_view + 2 * OVERSCAN).max(MIN_ROWS);
        let first_seen = rows(scrolled_px);
        let start = first_seen
            .saturating_sub(OVERSCAN)
            .min(total.saturating_sub(len));
        ListWindow { start, len }
    }

    /// The ids this window covers, clamped to the list.
    pub fn slice<'a, T>(&self, ids: &'a [T]) -> &'a [T] {
        let start = self.start.min(ids.len());
        let end = self.start.saturating_add(self.len).min(ids.len());
        &ids[start..end]
    }

    /// Rows above the window and below it, for the two spacers.
    pub fn hidden(&self, total: usize) -> (usize, usize) {
        let above = self.start.min(total);
        let shown = self.len.min(total - above);
        (above, total - above - shown)
    }
}

/// A spacer's inline style; whole pixels so the server and the browser write the same text.
pub fn spacer_style(rows: usize, row_px: f64) -> String {
    format!("height:{}px", (rows as f64 * row_px).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_fleet_is_rendered_whole_wherever_the_page_is_scrolled() {
        for scrolled in [-300.0, 0.0, 400.0, 10_000.0] {
            let w = ListWindow::around(30, scrolled, 800.0, 45.0);
            assert_eq!(w.start, 0, "scrolled {scrolled}");
            let ids: Vec<usize> = (0..30).collect();
            assert_eq!(w.slice(&ids).len(), 30);
            assert_eq!(w.hidden(30), (0, 0));
        }
    }

    #[test]
    fn the_window_follows_the_scroll_with_a_margin_on_both_sides() {
        // 1 000 rows of 40 px; the list's top is 4 000 px above the viewport: row 100 is first.
        let w = ListWindow::around(1000, 4000.0, 800.0, 40.0);
        assert_eq!(w.start, 100 - OVERSCAN);
        // 21 rows in view (20 and a partial one), a margin each side.
        assert_eq!(w.len, (21 + 2 * OVERSCAN).max(MIN_ROWS));
        assert!(w.start + w.len >= 100 + 21 + OVERSCAN);
        let ids: Vec<usize> = (0..1000).collect();
        assert_eq!(w.slice(&ids).first(), Some(&w.start));
        let (above, below) = w.hidden(1000);
        assert_eq!(above + w.len + below, 1000);
    }

    #[test]
    fn a_page_built_in_the_browser_starts_with_the_window_it_will_measure() {
        for viewport in [800.0, 4000.0] {
            let first = ListWindow::first_in(viewport);
            let measured = ListWindow::around(1000, 0.0, viewport, ROW_ESTIMATE_PX);
            assert_eq!(first, measured, "viewport {viewport}");
            assert!(first.len > ListWindow::INITIAL.len);
        }
        // Nothing known about the viewport: the minimum.
        assert_eq!(ListWindow::first_in(0.0).len, MIN_ROWS);
    }

    #[test]
    fn the_list_below_the_viewport_starts_at_the_top() {
        let w = ListWindow::around(1000, -250.0, 800.0, 45.0);
        assert_eq!(w.start, 0);
        assert_eq!(w, ListWindow::around(1000, 0.0, 800.0, 45.0));
    }

    #[test]
    fn scrolled_past_the_end_the_window_ends_at_the_last_row() {
        let w = ListWindow::around(1000, 1.0e9, 800.0, 45.0);
        assert_eq!(w.start + w.len, 1000);
        let ids: Vec<usize> = (0..1000).collect();
        assert_eq!(w.slice(&ids).last(), Some(&999));
        assert_eq!(w.hidden(1000).1, 0);
    }

    #[test]
    fn a_tall_viewport_gets_more_rows_than_the_minimum() {
        let w = ListWindow::around(5000, 0.0, 4000.0, 40.0);
        assert_eq!(w.len, 101 + 2 * OVERSCAN);
    }

    #[test]
    fn nonsense_measurements_fall_back_to_the_estimate() {
        for row_px in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            let w = ListWindow::around(1000, 900.0, 800.0, row_px);
            assert_eq!(w, ListWindow::around(1000, 900.0, 800.0, ROW_ESTIMATE_PX));
        }
        let w = ListWindow::around(1000, f64::NAN, f64::NAN, 45.0);
        assert_eq!(
            w,
            ListWindow {
                start: 0,
                len: MIN_ROWS
            }
        );
    }

    #[test]
    fn a_window_outliving_a_shrunk_list_is_clamped() {
        let w = ListWindow {
            start: 900,
            len: 60,
        };
        let ids: Vec<usize> = (0..100).collect();
        assert!(w.slice(&ids).is_empty());
        assert_eq!(w.hidden(100), (100, 0));
        let w = ListWindow { start: 80, len: 60 };
        assert_eq!(w.slice(&ids).len(), 20);
        assert_eq!(w.hidden(100), (80, 0));
    }

    #[test]
    fn server_and_browser_write_the_same_spacer() {
        assert_eq!(spacer_style(0, ROW_ESTIMATE_PX), "height:0px");
        assert_eq!(spacer_style(950, ROW_ESTIMATE_PX), "height:42750px");
        assert_eq!(spacer_style(3, 44.6), "height:134px");
    }
}
