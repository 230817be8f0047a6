//! The pure parts of the efficacy benchmark (`flywheel-trainer-efficacy`): review orders, the
//! reviews a curve needs to recover, and the SVG chart.

use std::collections::HashSet;

use flywheel_types::Task;
use flywheel_types::prediction::Shape;
use flywheel_vision::review_order::{QueueKey, disagree, lowest_confidence, queue_order};
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
    /// The review service's order before the interleave: champion/shadow disagreements first,
    /// then the champion's lowest confidence.
    Disagreement,
    /// The review service's order (`flywheel_vision::review_order::queue_order`, the SQL in
    /// `review-service/src/store.rs`): a stratified sample of (disagreement, the champion's
    /// least confident label), in proportion to each part's size.
    Product,
}

impl Order {
    pub const ALL: [Order; 4] = [Order::Random, Order::Margin, Order::Disagreement, Order::Product];

    pub fn name(self) -> &'static str {
        match self {
            Order::Random => "random",
            Order::Margin => "margin",
            Order::Disagreement => "disagreement",
            Order::Product => "product",
        }
    }

    pub fn parse(name: &str) -> Option<Order> {
        Order::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// The next images to review: indices of `champion` (one prediction per image, `ids` naming
/// them as the review service's prediction ids do) not in
/// `reviewed`, in review order; `shadow`, when deployed, answers for the same images. Ties keep
/// the image order. The product's order ranks the unreviewed images only, as the review
/// service's queue (`reviewed = 0`) does.
pub fn review_order(
    order: Order,
    task: Task,
    ids: &[String],
    champion: &[Vec<Shape>],
    shadow: Option<&[Vec<Shape>]>,
    reviewed: &HashSet<usize>,
    seed: u64,
) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..champion.len()).collect();
    match order {
        Order::Random => idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed)),
        Order::Margin => {
            idx.sort_by(|&a, &b| lowest_confidence(&champion[a]).total_cmp(&lowest_confidence(&champion[b])))
        }
        Order::Disagreement => {
            let dis = |i: usize| shadow.is_some_and(|s| disagree(task, &champion[i], &s[i]));
            idx.sort_by(|&a, &b| {
                dis(b).cmp(&dis(a)).then(lowest_confidence(&champion[a]).total_cmp(&lowest_confidence(&champion[b])))
            });
        }
        Order::Product => {
            idx.retain(|i| !reviewed.contains(i));
            let keys: Vec<QueueKey> = idx
                .iter()
                .map(|&i| QueueKey::new(task, &ids[i], &champion[i], shadow.map(|s| s[i].as_slice())))
                .collect();
            return queue_order(&keys).into_iter().map(|k| idx[k]).collect();
        }
    }
    idx.retain(|i| !reviewed.contains(i));
    idx
}

/// The first number of reviews whose value reaches `target`, if any.
pub fn reviews_to_reach(curve: &[(usize, f64)], target: f64) -> Option<usize> {
    curve.iter().find(|(_, v)| *v >= target).map(|(n, _)| *n)
}

/// The first number of reviews from which every later value stays at `target` or above (a
/// recovery that holds as reviews keep coming, not one lucky retraining), if any.
pub fn reviews_to_stay(curve: &[(usize, f64)], target: f64) -> Option<usize> {
    let from = curve.iter().rposition(|(_, v)| *v < target).map_or(0, |k| k + 1);
    curve.get(from).map(|(n, _)| *n)
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
    fn margin_puts_the_least_confident_first_and_product_samples_the_predicted_classes_in_proportion() {
        let b = [0.0, 0.0, 10.0, 10.0];
        // Six confident "a" and two unsure "b": margin takes both "b" first; the product takes
        // one "b" in the first four, as a stratified sample of 6:2 does.
        let confidences = [0.9, 0.95, 0.3, 0.92, 0.97, 0.2, 0.91, 0.93];
        let labels = ["a", "a", "b", "a", "a", "b", "a", "a"];
        let champion: Vec<Vec<Shape>> = labels.iter().zip(confidences).map(|(l, c)| vec![shape(l, c, b)]).collect();
        let ids: Vec<String> = (0..8).map(|i| format!("id-{i}")).collect();
        let none = HashSet::new();
        let order = |o, shadow: Option<&[Vec<Shape>]>, reviewed: &HashSet<usize>| {
            review_order(o, Task::Detection, &ids, &champion, shadow, reviewed, 1)
        };
        assert_eq!(order(Order::Margin, None, &none)[..3], [5, 2, 0]);
        assert_eq!(order(Order::Margin, None, &HashSet::from([5])).len(), 7);
        let product = order(Order::Product, None, &none);
        assert_eq!(product[..4].iter().filter(|&&i| labels[i] == "b").count(), 1);
        assert_eq!(product[4..].iter().filter(|&&i| labels[i] == "b").count(), 1);
        // The disagreement order (the queue's order before) takes a disagreement first.
        let mut shadow = champion.clone();
        shadow[4] = vec![shape("b", 0.9, b)];
        assert_eq!(order(Order::Disagreement, Some(&shadow), &none)[..3], [4, 5, 2]);
        // The product ranks the unreviewed images only, by the same key as the review service.
        let rest = order(Order::Product, Some(&shadow), &HashSet::from([0, 2]));
        let pending = [1, 3, 4, 5, 6, 7];
        let keys: Vec<QueueKey> =
            pending.iter().map(|&i| QueueKey::new(Task::Detection, &ids[i], &champion[i], Some(&shadow[i]))).collect();
        assert_eq!(rest, queue_order(&keys).into_iter().map(|k| pending[k]).collect::<Vec<_>>());
        let mut random = order(Order::Random, None, &none);
        random.sort();
        assert_eq!(random, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn the_reviews_to_recover_are_the_first_point_at_the_target() {
        let curve = [(0, 0.3), (20, 0.6), (40, 0.79), (60, 0.81), (80, 0.78)];
        assert_eq!(reviews_to_reach(&curve, 0.79), Some(40));
        assert_eq!(reviews_to_reach(&curve, 0.9), None);
        assert_eq!(reviews_to_stay(&curve, 0.78), Some(40));
        assert_eq!(reviews_to_stay(&curve, 0.79), None);
        assert_eq!(reviews_to_stay(&curve, 0.2), Some(0));
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
