//! Drift domains of the generated datasets: the `source` domain (what `generate dataset` draws
//! without `--domain`) and shifted target domains of the same classes. A domain is a set of
//! shifts and one severity in 0..=1. Scene shifts change how a scene is drawn (`texture`
//! background, `small` / `large` objects, one class `recolor`ed); pixel shifts then change the
//! finished image in the order light (`dark`, `warm` / `cool`), optics (`blur`), sensor
//! (`noise`). Random shifts draw from their own per-image seed, so the scene itself (positions,
//! classes, boxes) is the source domain's for the same seed unless the object scale changes.

use std::collections::BTreeSet;
use std::fmt;

use image::RgbImage;

use super::images::{Style, class_colour};
use super::shifts;

/// One change from the source domain. The order is the order they are applied in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shift {
    /// A textured background instead of a flat noisy one.
    Texture,
    /// Smaller objects.
    Small,
    /// Larger objects.
    Large,
    /// One class (the named label, or the first) drawn in the next class's typical colour.
    Recolor(Option<String>),
    /// Lower brightness and contrast.
    Dark,
    /// A warm colour cast (more red, less blue).
    Warm,
    /// A cool colour cast (more blue, less red).
    Cool,
    /// Gaussian blur.
    Blur,
    /// Per-pixel Gaussian noise.
    Noise,
}

/// The shift names `--domain` accepts (besides `source`).
pub const SHIFT_NAMES: &[&str] = &["dark", "warm", "cool", "texture", "small", "large", "blur", "noise", "recolor"];

/// `small`: object sides multiplied by `1 - SMALL * severity`.
pub const SMALL: f32 = 0.5;
/// `large`: object sides multiplied by `1 + LARGE * severity` (at most the image side).
pub const LARGE: f32 = 0.6;

impl std::str::FromStr for Shift {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            "dark" => Shift::Dark,
            "warm" => Shift::Warm,
            "cool" => Shift::Cool,
            "texture" => Shift::Texture,
            "small" => Shift::Small,
            "large" => Shift::Large,
            "blur" => Shift::Blur,
            "noise" => Shift::Noise,
            "recolor" => Shift::Recolor(None),
            other => match other.strip_prefix("recolor:") {
                Some(label) if !label.is_empty() => Shift::Recolor(Some(label.to_string())),
                _ => {
                    return Err(format!(
                        "unknown shift {other:?}: expected source or a comma-separated list of {} (recolor:LABEL \
                         picks the class)",
                        SHIFT_NAMES.join(", ")
                    ));
                }
            },
        })
    }
}

impl fmt::Display for Shift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Shift::Texture => "texture",
            Shift::Small => "small",
            Shift::Large => "large",
            Shift::Recolor(None) => "recolor",
            Shift::Recolor(Some(label)) => return write!(f, "recolor:{label}"),
            Shift::Dark => "dark",
            Shift::Warm => "warm",
            Shift::Cool => "cool",
            Shift::Blur => "blur",
            Shift::Noise => "noise",
        };
        f.write_str(name)
    }
}

/// A domain: no shift (the source domain) or a set of shifts at one severity.
#[derive(Clone, Debug, PartialEq)]
pub struct Domain {
    shifts: BTreeSet<Shift>,
    severity: f64,
}

impl Default for Domain {
    fn default() -> Self {
        Domain { shifts: BTreeSet::new(), severity: 1.0 }
    }
}

impl Domain {
    /// `text` is `source` or a comma-separated list of shifts; `severity` is in 0..=1.
    pub fn parse(text: &str, severity: f64) -> Result<Domain, String> {
        if !(0.0..=1.0).contains(&severity) {
            return Err(format!("severity must be between 0 and 1, got {severity}"));
        }
        let shifts: BTreeSet<Shift> = match text.trim() {
            "" | "source" => BTreeSet::new(),
            list if list.split(',').any(|s| s.trim() == "source") => {
                return Err(format!("source is the domain without shifts: it cannot be combined with others ({list})"));
            }
            list => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        };
        for (a, b) in [(Shift::Warm, Shift::Cool), (Shift::Small, Shift::Large)] {
            if shifts.contains(&a) && shifts.contains(&b) {
                return Err(format!("{a} and {b} pull in opposite directions: pick one"));
            }
        }
        if shifts.iter().filter(|s| matches!(s, Shift::Recolor(_))).count() > 1 {
            return Err("one recolor per domain".into());
        }
        Ok(Domain { shifts, severity })
    }

    pub fn is_source(&self) -> bool {
        self.shifts.is_empty()
    }

    pub fn severity(&self) -> f64 {
        self.severity
    }

    /// Checks the domain against the dataset's labels and fixes what it does for `seed`.
    pub fn plan(&self, labels: &[String], seed: u64) -> Result<Plan, String> {
        let recolor = match self.shifts.iter().find_map(|s| match s {
            Shift::Recolor(label) => Some(label),
            _ => None,
        }) {
            None => None,
            Some(None) => Some(0),
            Some(Some(label)) => Some(labels.iter().position(|l| l == label).ok_or_else(|| {
                format!("recolor:{label}: {label:?} is not one of the labels ({})", labels.join(", "))
            })?),
        };
        Ok(Plan { domain: self.clone(), recolor, seed })
    }

    fn has(&self, shift: &Shift) -> bool {
        self.shifts.contains(shift)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_source() {
            return f.write_str("source");
        }
        let names: Vec<String> = self.shifts.iter().map(Shift::to_string).collect();
        f.write_str(&names.join(","))
    }
}

/// A domain fixed for one dataset: its recoloured class resolved and its seed.
#[derive(Clone, Debug)]
pub struct Plan {
    domain: Domain,
    recolor: Option<usize>,
    seed: u64,
}

/// Seeds of the random shifts, one stream each, so combining shifts changes none of them.
#[derive(Clone, Copy)]
enum Stream {
    Texture = 1,
    Noise = 2,
}

impl Plan {
    /// How image `index`'s scene is drawn.
    pub fn style(&self, index: usize) -> Style {
        let (d, s) = (&self.domain, self.domain.severity as f32);
        let scale = if d.has(&Shift::Small) {
            1.0 - SMALL * s
        } else if d.has(&Shift::Large) {
            1.0 + LARGE * s
        } else {
            1.0
        };
        Style {
            scale,
            recolor: self.recolor.map(|c| (c, recolored(class_colour(c), class_colour(c + 1), s))),
            texture: d.has(&Shift::Texture).then(|| (s, self.image_seed(index, Stream::Texture))),
        }
    }

    /// Image `index` after the pixel shifts (light, then optics, then sensor).
    pub fn finish(&self, img: RgbImage, index: usize) -> RgbImage {
        let (d, s) = (&self.domain, self.domain.severity as f32);
        let mut img = img;
        if d.has(&Shift::Dark) {
            img = shifts::darken(&img, s);
        }
        if d.has(&Shift::Warm) {
            img = shifts::colour_cast(&img, s);
        }
        if d.has(&Shift::Cool) {
            img = shifts::colour_cast(&img, -s);
        }
        if d.has(&Shift::Blur) {
            img = shifts::blur(&img, s);
        }
        if d.has(&Shift::Noise) {
            img = shifts::noise(&img, s, self.image_seed(index, Stream::Noise));
        }
        img
    }

    /// A seed of its own for each (dataset seed, image, stream) (SplitMix64 finaliser).
    fn image_seed(&self, index: usize, stream: Stream) -> u64 {
        let mut z = self.seed ^ (index as u64).rotate_left(20) ^ ((stream as u64) << 56) ^ 0x9E37_79B9_7F4A_7C15;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `recolor`: the class's typical colour moved towards `target` by `severity`.
pub fn recolored(original: [f32; 3], target: [f32; 3], severity: f32) -> [f32; 3] {
    [0, 1, 2].map(|c| original[c] + (target[c] - original[c]) * severity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["circle", "square", "triangle"].map(String::from).to_vec()
    }

    #[test]
    fn parses_and_prints_in_application_order() {
        let d = Domain::parse("noise, dark,recolor:square,texture,dark", 0.5).unwrap();
        assert_eq!(d.to_string(), "texture,recolor:square,dark,noise");
        assert_eq!(Domain::parse(&d.to_string(), 0.5).unwrap(), d);
        assert!(Domain::parse("source", 1.0).unwrap().is_source());
        assert_eq!(Domain::parse("source", 1.0).unwrap(), Domain::default());
    }

    #[test]
    fn refuses_what_it_cannot_draw() {
        for (text, severity, needle) in [
            ("sepia", 1.0, "unknown shift \"sepia\""),
            ("dark,source", 1.0, "cannot be combined"),
            ("warm,cool", 1.0, "opposite directions"),
            ("small,large", 1.0, "opposite directions"),
            ("recolor,recolor:square", 1.0, "one recolor"),
            ("recolor:", 1.0, "unknown shift"),
            ("dark", 1.5, "between 0 and 1"),
            ("dark", f64::NAN, "between 0 and 1"),
        ] {
            let err = Domain::parse(text, severity).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
        let err = Domain::parse("recolor:hexagon", 1.0).unwrap().plan(&labels(), 1).unwrap_err();
        assert!(err.contains("\"hexagon\" is not one of the labels (circle, square, triangle)"), "{err}");
    }

    #[test]
    fn the_source_plan_draws_the_source_style_and_leaves_pixels_alone() {
        let plan = Domain::default().plan(&labels(), 4).unwrap();
        assert_eq!(plan.style(3), Style::default());
        let img = RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 7]));
        assert_eq!(plan.finish(img.clone(), 3), img);
    }

    #[test]
    fn scene_shifts_set_the_style() {
        let plan = Domain::parse("small,recolor:square,texture", 0.5).unwrap().plan(&labels(), 4).unwrap();
        let style = plan.style(2);
        assert_eq!(style.scale, 0.75);
        let (class, colour) = style.recolor.unwrap();
        assert_eq!(class, 1);
        assert_eq!(colour, recolored(class_colour(1), class_colour(2), 0.5));
        assert_eq!(style.texture.unwrap().0, 0.5);
        assert_ne!(style.texture, plan.style(3).texture, "each image has its own texture");
        assert_eq!(Domain::parse("large", 1.0).unwrap().plan(&labels(), 4).unwrap().style(0).scale, 1.6);
        assert_eq!(Domain::parse("recolor", 1.0).unwrap().plan(&labels(), 4).unwrap().style(0).recolor.unwrap().0, 0);
    }

    #[test]
    fn image_seeds_differ_by_seed_image_and_stream() {
        let plan = |seed| Domain::parse("noise", 1.0).unwrap().plan(&labels(), seed).unwrap();
        let (a, b) = (plan(1), plan(2));
        let seeds = [
            a.image_seed(0, Stream::Noise),
            a.image_seed(1, Stream::Noise),
            a.image_seed(0, Stream::Texture),
            b.image_seed(0, Stream::Noise),
        ];
        let distinct: BTreeSet<u64> = seeds.into_iter().collect();
        assert_eq!(distinct.len(), 4, "{seeds:?}");
    }
}
