//! Each shift moves what it says it moves, deterministically per seed, and severity 0 is the
//! source domain.

use std::path::Path;

use flywheel_trainer::generate::SHIFT_NAMES;
use flywheel_vision::ImageStats;
use image::RgbImage;

use super::{coco, edge_energy, files, generate, images, mean_over, refused};

const COUNT: &str = "36";

fn detection(dir: &Path, name: &str, domain: &str, severity: &str) -> std::path::PathBuf {
    let args = ["--task", "detection", "--format", "coco", "--count", COUNT, "--seed", "11"];
    generate(dir, name, &[&args[..], &["--domain", domain, "--severity", severity]].concat())
}

fn stat(f: fn(&ImageStats) -> f64) -> impl Fn(&RgbImage) -> f64 {
    move |img| f(&ImageStats::compute(img))
}

fn brightness(s: &ImageStats) -> f64 {
    s.brightness
}

fn contrast(s: &ImageStats) -> f64 {
    s.contrast
}

fn red_minus_blue(s: &ImageStats) -> f64 {
    s.mean_red - s.mean_blue
}

/// Mean box area (fraction of the image) in a COCO dataset.
fn mean_box_area(root: &Path) -> f64 {
    let doc = coco(root);
    let areas: Vec<f64> = doc.annotations.iter().map(|a| a.bbox[2] * a.bbox[3] / (64.0 * 64.0)).collect();
    areas.iter().sum::<f64>() / areas.len() as f64
}

#[test]
fn the_same_seed_writes_the_same_bytes_and_another_seed_does_not() {
    let dir = tempfile::tempdir().unwrap();
    for domain in ["texture,recolor,dark,blur,noise", "large,cool,noise"] {
        for (task, format) in [("detection", "coco"), ("classification", "imagefolder")] {
            let args = |seed| {
                [
                    "--task",
                    task,
                    "--format",
                    format,
                    "--count",
                    "12",
                    "--seed",
                    seed,
                    "--domain",
                    domain,
                    "--severity",
                    "0.8",
                ]
            };
            let a = files(&generate(dir.path(), &format!("{domain}-{task}-a"), &args("5")));
            let b = files(&generate(dir.path(), &format!("{domain}-{task}-b"), &args("5")));
            let c = files(&generate(dir.path(), &format!("{domain}-{task}-c"), &args("6")));
            assert_eq!(a.len(), b.len());
            assert!(a == b, "{domain} {task}: the same seed wrote different files");
            let differing = a.iter().zip(&c).filter(|(x, y)| x.0.ends_with(".png") && x.1 != y.1).count();
            assert!(differing >= 10, "{domain} {task}: only {differing} images differ between seeds 5 and 6");
        }
    }
}

#[test]
fn severity_zero_is_the_source_domain_for_every_shift() {
    let dir = tempfile::tempdir().unwrap();
    for (task, format) in [("detection", "yolo"), ("classification", "imagefolder")] {
        let base = ["--task", task, "--format", format, "--count", "9", "--seed", "4"];
        let source = files(&generate(dir.path(), &format!("{task}-source"), &base));
        for shift in SHIFT_NAMES {
            let args = [&base[..], &["--domain", shift, "--severity", "0"]].concat();
            let shifted = files(&generate(dir.path(), &format!("{task}-{shift}"), &args));
            assert!(shifted == source, "{task}: {shift} at severity 0 is not the source domain");
        }
    }
}

#[test]
fn light_optics_and_sensor_shifts_move_the_image_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let source = images(&detection(dir.path(), "source", "source", "1"));
    let shifted = |domain: &str, severity: &str| {
        images(&detection(dir.path(), &format!("{domain}-{severity}"), domain, severity))
    };
    let delta = |imgs: &[(String, RgbImage)], f: &dyn Fn(&RgbImage) -> f64| mean_over(imgs, f) - mean_over(&source, f);

    // dark: brightness and contrast x (1 - 0.6 s).
    let (dark, half_dark) = (shifted("dark", "1"), shifted("dark", "0.5"));
    let drop = -delta(&dark, &stat(brightness));
    assert!(drop >= 0.15, "dark lowered the mean brightness by only {drop:.3}");
    assert!(-delta(&half_dark, &stat(brightness)) < drop - 0.05, "severity 0.5 darkens less than 1");
    assert!(delta(&dark, &stat(contrast)) <= -0.03, "dark lowers contrast");

    // warm / cool: red against blue by +-40 levels (+-0.31 of the range before clipping).
    let warm = delta(&shifted("warm", "1"), &stat(red_minus_blue));
    let cool = delta(&shifted("cool", "1"), &stat(red_minus_blue));
    assert!(warm >= 0.25, "warm raised red - blue by only {warm:.3}");
    assert!(cool <= -0.25, "cool lowered red - blue by only {cool:.3}");

    // texture: more contrast, about the same brightness.
    let texture = shifted("texture", "1");
    let contrast_rise = delta(&texture, &stat(contrast));
    assert!(contrast_rise >= 0.04, "texture raised contrast by only {contrast_rise:.3}");
    assert!(delta(&texture, &stat(brightness)).abs() < 0.03);

    // blur removes high frequencies, noise adds them; neither moves the brightness much.
    let edges = mean_over(&source, edge_energy);
    let (blur, noise) = (shifted("blur", "1"), shifted("noise", "1"));
    assert!(mean_over(&blur, edge_energy) < 0.5 * edges, "blur: {} vs {edges}", mean_over(&blur, edge_energy));
    assert!(mean_over(&noise, edge_energy) > 1.5 * edges, "noise: {} vs {edges}", mean_over(&noise, edge_energy));
    assert!(delta(&blur, &stat(brightness)).abs() < 0.01);
    assert!(delta(&noise, &stat(brightness)).abs() < 0.02);
}

#[test]
fn small_and_large_change_the_annotated_box_areas() {
    let dir = tempfile::tempdir().unwrap();
    let source = mean_box_area(&detection(dir.path(), "source", "source", "1"));
    let small = mean_box_area(&detection(dir.path(), "small", "small", "1"));
    let large = mean_box_area(&detection(dir.path(), "large", "large", "1"));
    // Sides x 0.5 and x 1.6 (clipped to the image): areas about x 0.25 and x 2.5.
    assert!(small < 0.35 * source, "small: mean box area {small:.4} vs source {source:.4}");
    assert!(large > 1.8 * source, "large: mean box area {large:.4} vs source {source:.4}");
}

/// Mean RGB (0..1) over the pixels inside the boxes of `label`, and the images with all those
/// boxes' pixels blanked out.
fn inside_and_outside(root: &Path, label: &str) -> ([f64; 3], Vec<RgbImage>) {
    let doc = coco(root);
    let category = doc.categories.iter().find(|c| c.name == label).unwrap().id;
    let (mut sum, mut n) = ([0f64; 3], 0f64);
    let mut outside = Vec::new();
    for img in &doc.images {
        let mut pixels = image::open(root.join(img.path())).unwrap().to_rgb8();
        for a in doc.annotations.iter().filter(|a| a.image_id == img.id && a.category_id == category) {
            let [x, y, w, h] = [a.bbox[0], a.bbox[1], a.bbox[2], a.bbox[3]].map(|v| v as u32);
            for py in y..y + h {
                for px in x..x + w {
                    let p = pixels.get_pixel_mut(px, py);
                    for c in 0..3 {
                        sum[c] += p[c] as f64 / 255.0;
                    }
                    n += 1.0;
                    *p = image::Rgb([0, 0, 0]);
                }
            }
        }
        outside.push(pixels);
    }
    assert!(n > 0.0, "no {label} boxes");
    (sum.map(|s| s / n), outside)
}

#[test]
fn recolor_changes_the_colour_inside_that_class_only() {
    let dir = tempfile::tempdir().unwrap();
    let source = detection(dir.path(), "source", "source", "1");
    // The first class (circle, red) takes the next class's colour (green)...
    let recolor = detection(dir.path(), "recolor", "recolor", "1");
    let (before, source_outside) = inside_and_outside(&source, "circle");
    let (after, recolor_outside) = inside_and_outside(&recolor, "circle");
    assert!(after[0] < before[0] - 0.2 && after[1] > before[1] + 0.2, "circles: {before:?} -> {after:?}");
    assert!(recolor_outside == source_outside, "recolor changed pixels outside the circles");
    // ... and recolor:LABEL picks the class (square, green, takes blue).
    let squares = detection(dir.path(), "recolor-square", "recolor:square", "1");
    let (before, source_outside) = inside_and_outside(&source, "square");
    let (after, squares_outside) = inside_and_outside(&squares, "square");
    assert!(after[1] < before[1] - 0.2 && after[2] > before[2] + 0.2, "squares: {before:?} -> {after:?}");
    assert!(squares_outside == source_outside, "recolor:square changed pixels outside the squares");
}

#[test]
fn classification_images_shift_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let classify = |name: &str, domain: &str| {
        let args = ["--task", "classification", "--format", "imagefolder", "--count", COUNT, "--seed", "12"];
        images(&generate(dir.path(), name, &[&args[..], &["--domain", domain]].concat()))
    };
    let source = classify("source", "source");
    let mean = |imgs: &[(String, RgbImage)], f: fn(&ImageStats) -> f64| mean_over(imgs, stat(f));
    assert!(mean(&classify("dark", "dark"), brightness) < mean(&source, brightness) - 0.15);
    assert!(mean(&classify("warm", "warm"), red_minus_blue) > mean(&source, red_minus_blue) + 0.25);
    assert!(mean_over(&classify("blur", "blur"), edge_energy) < 0.5 * mean_over(&source, edge_energy));
    // recolor: the circle images (the first class) lose red and gain green.
    let circles = |imgs: Vec<(String, RgbImage)>| -> Vec<(String, RgbImage)> {
        imgs.into_iter().filter(|(p, _)| p.starts_with("circle/")).collect()
    };
    let (before, after) = (circles(source.clone()), circles(classify("recolor", "recolor")));
    assert_eq!(before.len(), 12);
    let red = |s: &ImageStats| s.mean_red;
    let green = |s: &ImageStats| s.mean_green;
    assert!(mean(&after, red) < mean(&before, red) - 0.1);
    assert!(mean(&after, green) > mean(&before, green) + 0.1);
}

#[test]
fn a_domain_the_generator_cannot_draw_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["--task", "detection", "--format", "coco", "--count", "2"];
    for (extra, needle) in [
        (&["--domain", "sepia"][..], "unknown shift \"sepia\""),
        (&["--domain", "warm,cool"][..], "opposite directions"),
        (&["--domain", "dark", "--severity", "1.5"][..], "severity must be between 0 and 1"),
        (&["--domain", "recolor:hexagon"][..], "\"hexagon\" is not one of the labels"),
    ] {
        let stderr = refused(dir.path(), &[&base[..], extra].concat());
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    }
    assert!(!dir.path().join("refused").exists(), "a refused domain wrote files");
}
