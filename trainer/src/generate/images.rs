//! Synthetic images: coloured circles, squares and triangles on noisy backgrounds. Each class
//! has its own shape and a typical hue (jittered), so a small network can learn it quickly but
//! an untrained one cannot. A [`Style`] changes how a scene is drawn for the drift domains
//! (`domains.rs`); `Style::default()` draws the source domain.

use flywheel_vision::iou;
use image::{Rgb, RgbImage};
use rand::Rng;

use super::shifts;

/// Shapes in class order; class `i` of a generated dataset draws `SHAPES[i % 3]`.
pub const DEFAULT_LABELS: &[&str] = &["circle", "square", "triangle"];

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

impl Shape {
    pub fn of_class(class: usize) -> Shape {
        [Shape::Circle, Shape::Square, Shape::Triangle][class % 3]
    }
}

/// How a scene is drawn. The default draws the source domain exactly as the generator always
/// did. A style draws nothing from the scene's random numbers itself (a texture has its own
/// seed), so every field but `scale` leaves the scene (positions, classes, boxes) as the source
/// domain draws it for the same seed and changes only pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Style {
    /// Multiplies the range of object sides (clipped to the image).
    pub scale: f32,
    /// (class, typical colour) of a class drawn in another colour.
    pub recolor: Option<(usize, [f32; 3])>,
    /// (severity, seed) of a texture added to the background before the shapes are drawn.
    pub texture: Option<(f32, u64)>,
}

impl Default for Style {
    fn default() -> Self {
        Style { scale: 1.0, recolor: None, texture: None }
    }
}

impl Style {
    fn colour(&self, class: usize) -> [f32; 3] {
        match self.recolor {
            Some((c, colour)) if c == class => colour,
            _ => class_colour(class),
        }
    }

    /// The scene's background: the source's noisy flat one, textured when the style says so.
    fn background(&self, rng: &mut impl Rng, size: u32) -> RgbImage {
        let img = background(rng, size, size);
        match self.texture {
            Some((severity, seed)) => shifts::texture(&img, severity, seed),
            None => img,
        }
    }
}

/// Typical colour of a class (red, green, blue, then yellow, magenta, cyan, ...).
pub fn class_colour(class: usize) -> [f32; 3] {
    const PALETTE: [[f32; 3]; 6] =
        [[220., 40., 40.], [40., 200., 60.], [50., 70., 230.], [230., 210., 40.], [210., 50., 210.], [40., 210., 210.]];
    PALETTE[class % PALETTE.len()]
}

/// A noisy background: a random dim base colour plus per-pixel noise.
pub fn background(rng: &mut impl Rng, width: u32, height: u32) -> RgbImage {
    let base: [f32; 3] = [rng.random_range(40.0..150.0), rng.random_range(40.0..150.0), rng.random_range(40.0..150.0)];
    let grey = (base[0] + base[1] + base[2]) / 3.0;
    // Desaturate so the background never looks like a class colour.
    let base = base.map(|v| 0.3 * v + 0.7 * grey);
    RgbImage::from_fn(width, height, |_, _| {
        let n: f32 = rng.random_range(-25.0..25.0);
        Rgb(base.map(|v| (v + n).clamp(0.0, 255.0) as u8))
    })
}

/// Draws one shape of `class` filling the box [x1, y1, x2, y2] (pixels).
pub fn draw(img: &mut RgbImage, rng: &mut impl Rng, style: &Style, class: usize, rect: [f32; 4]) {
    let colour = style.colour(class).map(|v| (v + rng.random_range(-30.0..30.0)).clamp(0.0, 255.0));
    let [x1, y1, x2, y2] = rect;
    let (cx, cy, r) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0, (x2 - x1).min(y2 - y1) / 2.0);
    let shape = Shape::of_class(class);
    let inside = |x: f32, y: f32| match shape {
        Shape::Square => x >= x1 && x < x2 && y >= y1 && y < y2,
        Shape::Circle => (x - cx).powi(2) + (y - cy).powi(2) <= r * r,
        Shape::Triangle => {
            // Apex at the top centre, base along the bottom edge.
            let t = (y - y1) / (y2 - y1);
            (0.0..=1.0).contains(&t) && (x - cx).abs() <= t * (x2 - x1) / 2.0
        }
    };
    let (w, h) = img.dimensions();
    for y in (y1.floor().max(0.0) as u32)..(y2.ceil().min(h as f32) as u32) {
        for x in (x1.floor().max(0.0) as u32)..(x2.ceil().min(w as f32) as u32) {
            if inside(x as f32 + 0.5, y as f32 + 0.5) {
                let n: f32 = rng.random_range(-10.0..10.0);
                img.put_pixel(x, y, Rgb(colour.map(|v| (v + n).clamp(0.0, 255.0) as u8)));
            }
        }
    }
}

/// A random square box of side `lo..hi` pixels inside the image.
pub fn random_box(rng: &mut impl Rng, width: u32, height: u32, lo: f32, hi: f32) -> [f32; 4] {
    let side = rng.random_range(lo..hi).min(width as f32).min(height as f32);
    let x = rng.random_range(0.0..=(width as f32 - side)).floor();
    let y = rng.random_range(0.0..=(height as f32 - side)).floor();
    [x, y, x + side.round(), y + side.round()]
}

/// One classification image: a single shape of `class`.
pub fn classification_image(rng: &mut impl Rng, size: u32, class: usize, style: &Style) -> RgbImage {
    let mut img = style.background(rng, size);
    let s = size as f32 * style.scale;
    let rect = random_box(rng, size, size, s * 0.3, s * 0.65);
    draw(&mut img, rng, style, class, rect);
    img
}

/// One detection image: 1..=max_objects shapes that do not overlap much; returns the boxes.
pub fn detection_image(
    rng: &mut impl Rng,
    size: u32,
    classes: usize,
    max_objects: usize,
    style: &Style,
) -> (RgbImage, Vec<(usize, [f32; 4])>) {
    let mut img = style.background(rng, size);
    let s = size as f32 * style.scale;
    let n = rng.random_range(1..=max_objects.max(1));
    let mut boxes: Vec<(usize, [f32; 4])> = Vec::new();
    for _ in 0..n * 10 {
        if boxes.len() == n {
            break;
        }
        let rect = random_box(rng, size, size, s * 0.18, s * 0.4);
        if boxes.iter().all(|(_, b)| iou(b, &rect) < 0.05) {
            boxes.push((rng.random_range(0..classes), rect));
        }
    }
    for (class, rect) in &boxes {
        draw(&mut img, rng, style, *class, *rect);
    }
    (img, boxes)
}
