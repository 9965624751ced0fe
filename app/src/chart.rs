//! Lines for SVG: the one place values become an SVG path, for the rows' CPU sparklines
//! and the host page's charts. Hand-written rather than a chart library, and in whole
//! numbers only (a `viewBox` of `WIDTH` × `HEIGHT` stretched by CSS): a chart library, or
//! core's float formatting (≈ 16 kB, see `presentation::fixed`), would cost the first wasm
//! download more than the whole feature (P5 in docs/BENCHMARKS.md).

/// The drawing's size in `viewBox` units: x to `WIDTH`, y to `HEIGHT` (0 at the top).
pub const WIDTH: i64 = 600;
pub const HEIGHT: i64 = 100;

/// Where a chart's values land: x from `x0` to `x1` across the width, y from 0 up to
/// `y_max` from the bottom to the top.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frame {
    pub x0: f64,
    pub x1: f64,
    pub y_max: f64,
}

impl Frame {
    /// `x` in `viewBox` units, clamped to the drawing.
    pub fn x(&self, x: f64) -> i64 {
        let span = self.x1 - self.x0;
        if span <= 0.0 || !x.is_finite() {
            return 0;
        }
        (((x - self.x0) / span).clamp(0.0, 1.0) * WIDTH as f64).round() as i64
    }

    /// `y` in `viewBox` units (the top is 0), clamped to the drawing.
    pub fn y(&self, y: f64) -> i64 {
        if self.y_max <= 0.0 || !y.is_finite() {
            return HEIGHT;
        }
        HEIGHT - ((y / self.y_max).clamp(0.0, 1.0) * HEIGHT as f64).round() as i64
    }
}

/// The path (`d`) through `points` (x, value), in order of x. A missing value, or two
/// points further apart than `max_gap` in x (a step with no heartbeat: the host was off),
/// breaks the line rather than drawing across the hole. A point with no neighbour is drawn
/// as a dot (a zero-length segment, visible with `stroke-linecap: round`). No points: "".
pub fn line_path(
    points: impl IntoIterator<Item = (f64, Option<f64>)>,
    frame: &Frame,
    max_gap: f64,
) -> String {
    let mut d = String::new();
    // The previous point's x while a line is open, and whether the open line is one point.
    let mut open: Option<f64> = None;
    let mut lone = false;
    for (x, value) in points {
        let Some(v) = value.filter(|v| v.is_finite()) else {
            if lone {
                d.push_str("h0");
            }
            (open, lone) = (None, false);
            continue;
        };
        let (px, py) = (frame.x(x), frame.y(v));
        match open {
            Some(prev) if x - prev <= max_gap => {
                d.push_str(&format!("L{px} {py}"));
                lone = false;
            }
            _ => {
                if lone {
                    d.push_str("h0");
                }
                d.push_str(&format!("M{px} {py}"));
                lone = true;
            }
        }
        open = Some(x);
    }
    if lone {
        d.push_str("h0");
    }
    d
}

/// A row's sparkline: one value per minute (`CpuSparkline::cpu`), 0–100 %, across the
/// drawing.
pub fn sparkline_path(cpu: &[Option<u8>]) -> String {
    let frame = Frame {
        x0: 0.0,
        x1: cpu.len().saturating_sub(1).max(1) as f64,
        y_max: 100.0,
    };
    line_path(
        cpu.iter()
            .enumerate()
            .map(|(i, v)| (i as f64, v.map(f64::from))),
        &frame,
        1.0,
    )
}

/// A Merge & Deploy on a chart's time axis: one mark per deploy, at its first command in
/// the range (its pull and switch are seconds apart, one place on any range's axis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployMark {
    /// In `viewBox` units across the width (0 to `WIDTH`).
    pub x: i64,
    pub deploy_id: String,
    /// "PR #5", or "deploy" for a job whose PR is not known.
    pub label: String,
    /// What the mark says on hover: the deploy, its PR and the steps it ran on the host.
    pub title: String,
}

/// The deploy marks of a host's commands: `(time, deploy id, PR, command kind)` of each
/// command a deploy started, in any order; one mark per deploy, ordered by x.
pub fn deploy_marks<'a>(
    commands: impl IntoIterator<Item = (i64, &'a str, Option<u64>, &'a str)>,
    frame: &Frame,
) -> Vec<DeployMark> {
    /// One deploy's first time, id, PR and steps (time, command kind).
    type Deploy<'a> = (i64, &'a str, Option<u64>, Vec<(i64, &'a str)>);
    let mut deploys: Vec<Deploy> = Vec::new();
    for (t, id, pr, kind) in commands {
        match deploys.iter_mut().find(|d| d.1 == id) {
            Some(d) => {
                d.0 = d.0.min(t);
                d.3.push((t, kind));
            }
            None => deploys.push((t, id, pr, vec![(t, kind)])),
        }
    }
    deploys.sort_by_key(|d| (d.0, d.1));
    deploys
        .into_iter()
        .map(|(t, id, pr, mut steps)| {
            steps.sort();
            let label = pr.map_or_else(|| "deploy".to_owned(), |n| format!("PR #{n}"));
            let what = pr.map_or_else(String::new, |n| format!(" of PR #{n}"));
            let steps: Vec<&str> = steps.iter().map(|s| s.1).collect();
            DeployMark {
                x: frame.x(t as f64),
                deploy_id: id.to_owned(),
                title: format!("Merge & Deploy{what} (deploy {id}): {}", steps.join(", ")),
                label,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERCENT: Frame = Frame {
        x0: 0.0,
        x1: 60.0,
        y_max: 100.0,
    };

    #[test]
    fn points_become_one_line_in_whole_units() {
        let d = line_path(
            [(0.0, Some(0.0)), (30.0, Some(50.0)), (60.0, Some(100.0))],
            &PERCENT,
            30.0,
        );
        assert_eq!(d, "M0 100L300 50L600 0");
    }

    #[test]
    fn no_points_draw_nothing() {
        assert_eq!(line_path([], &PERCENT, 1.0), "");
        assert_eq!(line_path([(1.0, None), (2.0, None)], &PERCENT, 1.0), "");
        assert_eq!(sparkline_path(&[]), "");
    }

    #[test]
    fn a_single_point_is_a_dot() {
        assert_eq!(line_path([(30.0, Some(25.0))], &PERCENT, 1.0), "M300 75h0");
        assert_eq!(sparkline_path(&[Some(40)]), "M0 60h0");
    }

    #[test]
    fn gaps_break_the_line() {
        // A missing value, then a jump in x over `max_gap`: three pieces, the middle a dot.
        let d = line_path(
            [
                (0.0, Some(10.0)),
                (1.0, Some(20.0)),
                (2.0, None),
                (3.0, Some(30.0)),
                (10.0, Some(40.0)),
                (11.0, Some(f64::NAN)),
            ],
            &Frame {
                x0: 0.0,
                x1: 10.0,
                y_max: 100.0,
            },
            1.0,
        );
        assert_eq!(d, "M0 90L60 80M180 70h0M600 60h0");
        let spark = sparkline_path(&[Some(0), None, Some(100), Some(50)]);
        assert_eq!(spark, "M0 100h0M400 0L600 50");
    }

    #[test]
    fn values_outside_the_frame_stay_on_the_drawing() {
        let d = line_path([(-5.0, Some(-1.0)), (100.0, Some(250.0))], &PERCENT, 1000.0);
        assert_eq!(d, "M0 100L600 0");
        // A frame with no width or height draws at its edge instead of dividing by zero.
        let flat = Frame {
            x0: 5.0,
            x1: 5.0,
            y_max: 0.0,
        };
        assert_eq!(line_path([(5.0, Some(3.0))], &flat, 1.0), "M0 100h0");
    }

    #[test]
    fn a_deploys_commands_make_one_mark_at_its_first_step() {
        let frame = Frame {
            x0: 0.0,
            x1: 600.0,
            y_max: 100.0,
        };
        let marks = deploy_marks(
            [
                (312, "d-2", None, "switch"),
                (300, "d-1", Some(5), "switch"),
                (120, "d-1", Some(5), "pull"),
                (310, "d-2", None, "pull"),
            ],
            &frame,
        );
        assert_eq!(
            marks,
            [
                DeployMark {
                    x: 120,
                    deploy_id: "d-1".into(),
                    label: "PR #5".into(),
                    title: "Merge & Deploy of PR #5 (deploy d-1): pull, switch".into(),
                },
                DeployMark {
                    x: 310,
                    deploy_id: "d-2".into(),
                    label: "deploy".into(),
                    title: "Merge & Deploy (deploy d-2): pull, switch".into(),
                },
            ]
        );
        assert!(deploy_marks([], &frame).is_empty());
    }
}
