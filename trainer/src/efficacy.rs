//! The pure parts of the efficacy benchmark (`flywheel-trainer-efficacy`): review orders, the
//! reviews a curve needs to recover, and the SVG chart.

use flywheel_types::Task;
use flywheel_types::prediction::Shape;
use flywheel_vision::review_order::{disagree, lowest_confidence};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// How the next reviews are picked from the unreviewed production images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Uniformly at random.
    Random,
    /// The champion's lowest confidence first.
    Margin,
    /// The review service's order: champion/shadow disagreements first, then the champion's
    /// lowest confidence (`review-service/src/store.rs`, `flywheel_vision::review_order`).
    Product,
}

impl Order {
    pub const ALL: [Order; 3] = [Order::Random, Order::Margin, Order::Product];

    pub fn name(self) -> &'static str {
        match self {
            Order::Random => "random",
            Order::Margin => "margin",
            Order::Product => "product",
        }
    }
}

/// Indices of `champion` (one prediction per image) in review order; `shadow`, when deployed,
/// answers for the same images. Ties keep the image order.
pub fn review_order(
    order: Order,
    task: Task,
    champion: &[Vec<Shape>],
    shadow: Option<&[Vec<Shape>]>,
    seed: u64,
) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..champion.len()).collect();
    match order {
        Order::Random => idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed)),
        Order::Margin => {
            idx.sort_by(|&a, &b| lowest_confidence(&champion[a]).total_cmp(&lowest_confidence(&champion[b])))
        }
        Order::Product => {
            let dis = |i: usize| shadow.is_some_and(|s| disagree(task, &champion[i], &s[i]));
            idx.sort_by(|&a, &b| {
                dis(b).cmp(&dis(a)).then(lowest_confidence(&champion[a]).total_cmp(&lowest_confidence(&champion[b])))
            });
        }
    }
    idx
}

/// The first number of reviews whose value reaches `target`, if any.
pub fn reviews_to_reach(curve: &[(usize, f64)], target: f64) -> Option<usize> {
    curve.iter().find(|(_, v)| *v >= target).map(|(n, _)| *n)
}

/// A line chart: one polyline per series (name, points), a dashed line at `target`.
pub fn svg(title: &str, series: &[(String, Vec<(usize, f64)>)], target: Option<(String, f64)>) -> String {
    const COLOURS: [&str; 6] = ["#888888", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"];
    let (w, h, left, right, top, bottom) = (720.0, 420.0, 60.0, 170.0, 40.0, 50.0);
    let max_x = series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).max().unwrap_or(1).max(1) as f64;
    let x = |v: f64| left + v / max_x * (w - left - right);
    let y = |v: f64| top + (1.0 - v.clamp(0.0, 1.0)) * (h - top - bottom);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"24\" font-size=\"15\">{title}</text>\n"
    );
    for i in 0..=5 {
        let v = i as f64 / 5.0;
        out += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y0}\" y2=\"{y0}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.1}</text>\n",
            w - right,
            left - 6.0,
            y(v) + 4.0,
            y0 = y(v)
        );
    }
    for i in 0..=4 {
        let v = max_x * i as f64 / 4.0;
        out += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{v:.0}</text>\n", x(v), h - bottom + 18.0);
    }
    out += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">reviews</text><text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">mAP / accuracy on held-out target data</text>\n",
        (left + w - right) / 2.0,
        h - 12.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    if let Some((name, t)) = &target {
        out += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yt}\" y2=\"{yt}\" stroke=\"black\" stroke-dasharray=\"5,4\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
            w - right,
            w - right + 6.0,
            y(*t) + 4.0,
            yt = y(*t)
        );
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = points.iter().map(|(n, v)| format!("{:.1},{:.1}", x(*n as f64), y(*v))).collect();
        out += &format!("<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n", pts.join(" "));
        for (n, v) in points {
            out += &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>\n", x(*n as f64), y(*v));
        }
        let ly = top + 20.0 + 18.0 * i as f64;
        out += &format!(
            "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
            w - right + 6.0,
            w - right + 26.0,
            w - right + 30.0,
            ly + 4.0
        );
    }
    out + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(label: &str, confidence: f32, bbox: [f32; 4]) -> Shape {
        Shape { label: label.into(), class_id: 0, confidence, bbox: Some(bbox) }
    }

    #[test]
    fn margin_puts_the_least_confident_first_and_product_puts_disagreements_before_them() {
        let b = [0.0, 0.0, 10.0, 10.0];
        let champion = vec![vec![shape("a", 0.9, b)], vec![shape("a", 0.3, b)], vec![], vec![shape("a", 0.6, b)]];
        assert_eq!(review_order(Order::Margin, Task::Detection, &champion, None, 1), [2, 1, 3, 0]);
        // Without a shadow the product's order is the margin order.
        assert_eq!(review_order(Order::Product, Task::Detection, &champion, None, 1), [2, 1, 3, 0]);
        let mut shadow = champion.clone();
        shadow[0] = vec![shape("b", 0.9, b)];
        assert_eq!(review_order(Order::Product, Task::Detection, &champion, Some(&shadow), 1), [0, 2, 1, 3]);
        let mut random = review_order(Order::Random, Task::Detection, &champion, None, 1);
        random.sort();
        assert_eq!(random, [0, 1, 2, 3]);
    }

    #[test]
    fn the_reviews_to_recover_are_the_first_point_at_the_target() {
        let curve = [(0, 0.3), (20, 0.6), (40, 0.79), (60, 0.81), (80, 0.78)];
        assert_eq!(reviews_to_reach(&curve, 0.79), Some(40));
        assert_eq!(reviews_to_reach(&curve, 0.9), None);
    }

    #[test]
    fn the_chart_has_a_line_per_series_and_the_target() {
        let s = svg(
            "t",
            &[("no loop".into(), vec![(0, 0.3), (40, 0.3)]), ("random".into(), vec![(0, 0.3), (40, 0.7)])],
            Some(("target".into(), 0.8)),
        );
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("stroke-dasharray") && s.contains(">random<") && s.ends_with("</svg>\n"));
    }
}
