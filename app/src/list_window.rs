//! Which slice of the host list exists in the page. The dashboard renders only the hosts in
//! view plus a margin, on the server and in the browser, so a 10 000-host fleet costs the
//! page what about fifty hosts do (P4 in docs/BENCHMARKS.md: a server render of 1 000
//! hosts in p99 ≤ 30 ms, login to hydrated rows in ≤ 300 ms); spacers above and below
//! stand in for the rest so the scrollbar stays true to the whole fleet. Pure arithmetic,
//! tested here; the component in `components/host_list.rs` only measures and applies it.

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
    /// anything is measured: just the rows in view. The margin comes after the first paint
    /// (see `toward`), so a login shows its rows sooner (P4). Nothing known of the viewport:
    /// `INITIAL`'s rows.
    pub fn first_in(viewport_px: f64) -> ListWindow {
        if !(viewport_px.is_finite() && viewport_px > 0.0) {
            return ListWindow::INITIAL;
        }
        ListWindow::in_view(usize::MAX, 0.0, viewport_px, ROW_ESTIMATE_PX)
    }

    /// The rows of a list of `total` rows of `row_px` each that a viewport `viewport_px`
    /// high shows when the list's top edge is `scrolled_px` above the viewport's top
    /// (negative while the list starts lower down).
    pub fn in_view(total: usize, scrolled_px: f64, viewport_px: f64, row_px: f64) -> ListWindow {
        let row_px = if row_px.is_finite() && row_px >= 1.0 {
            row_px
        } else {
            ROW_ESTIMATE_PX
        };
        let rows = |px: f64| (px.max(0.0) / row_px) as usize;
        // The partly shown row at the bottom, and one more for a list that starts lower down
        // than the estimate says.
        let len = rows(viewport_px).saturating_add(1);
        let start = rows(scrolled_px).min(total.saturating_sub(len));
        ListWindow { start, len }
    }

    /// The window for a list of `total` rows: the rows in view (see `in_view`) with
    /// `OVERSCAN` more each side, and at least `MIN_ROWS`.
    pub fn around(total: usize, scrolled_px: f64, viewport_px: f64, row_px: f64) -> ListWindow {
        let seen = ListWindow::in_view(usize::MAX, scrolled_px, viewport_px, row_px);
        let len = (seen.len + 2 * OVERSCAN).max(MIN_ROWS);
        let start = seen
            .start
            .saturating_sub(OVERSCAN)
            .min(total.saturating_sub(len));
        ListWindow { start, len }
    }

    /// One step from this window toward `target`. Growing around rows that already cover
    /// `seen` (the rows in view) adds at most `step` rows, below first: the margin is built
    /// a frame at a time after the first paint rather than before it. Anything else (a
    /// scroll, rows in view that are missing) is `target` at once.
    pub fn toward(self, target: ListWindow, seen: ListWindow, step: usize) -> ListWindow {
        let end = |w: ListWindow| w.start.saturating_add(w.len);
        let grows = target.start <= self.start && end(self) <= end(target);
        let covers = self.start <= seen.start && end(seen) <= end(self);
        if !grows || !covers {
            return target;
        }
        let below = (end(target) - end(self)).min(step);
        let above = (self.start - target.start).min(step - below);
        ListWindow {
            start: self.start - above,
            len: self.len + below + above,
        }
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
    fn a_page_built_in_the_browser_starts_with_the_rows_in_view_then_grows_after() {
        for viewport in [800.0, 4000.0] {
            let first = ListWindow::first_in(viewport);
            let seen = ListWindow::in_view(1000, 0.0, viewport, ROW_ESTIMATE_PX);
            assert_eq!(first, seen, "viewport {viewport}");
            assert_eq!(first.start, 0);
            assert!(first.len as f64 * ROW_ESTIMATE_PX >= viewport);
            // Then a step at a time to the measured window, and no further.
            let target = ListWindow::around(1000, 0.0, viewport, ROW_ESTIMATE_PX);
            let (mut w, mut steps) = (first, 0);
            while w != target {
                let next = w.toward(target, seen, 12);
                assert!(
                    next.len > w.len && next.len - w.len <= 12,
                    "{w:?} → {next:?}"
                );
                assert_eq!(next.start, 0, "rows are added below the rows in view");
                (w, steps) = (next, steps + 1);
            }
            assert!(steps >= 2, "viewport {viewport}: {steps} steps");
            assert_eq!(w.toward(target, seen, 12), target);
        }
        // Nothing known about the viewport: what the server renders.
        assert_eq!(ListWindow::first_in(0.0), ListWindow::INITIAL);
        assert_eq!(ListWindow::first_in(f64::NAN), ListWindow::INITIAL);
    }

    #[test]
    fn a_scroll_or_missing_rows_in_view_jump_to_the_target_at_once() {
        let w = ListWindow { start: 0, len: 20 };
        // Scrolled down: the target starts below this window's start.
        let target = ListWindow::around(1000, 4000.0, 800.0, 40.0);
        let seen = ListWindow::in_view(1000, 4000.0, 800.0, 40.0);
        assert_eq!(w.toward(target, seen, 12), target);
        // A taller viewport shows rows this window lacks: no step, all at once.
        let target = ListWindow::around(1000, 0.0, 4000.0, 40.0);
        let seen = ListWindow::in_view(1000, 0.0, 4000.0, 40.0);
        assert!(seen.len > w.len);
        assert_eq!(w.toward(target, seen, 12), target);
        // Growing above as well once the rows below are done.
        let w = ListWindow { start: 30, len: 40 };
        let target = ListWindow { start: 20, len: 52 };
        let seen = ListWindow { start: 40, len: 10 };
        assert_eq!(
            w.toward(target, seen, 12),
            ListWindow { start: 20, len: 52 }
        );
        assert_eq!(w.toward(target, seen, 5), ListWindow { start: 27, len: 45 });
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
