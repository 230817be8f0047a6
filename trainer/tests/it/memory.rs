//! Large images: the trainer keeps only what the model's input needs of each image, so a
//! training run's peak memory does not grow with the images' resolution; an image whose header
//! declares more pixels than the limit is refused, naming the file, before it is decoded.

use std::io::Cursor;
use std::path::Path;

use crate::common::*;
use flywheel_api::common::{StorageUri, Task};
use flywheel_api::dataset_version::{DatasetFormat, DatasetVersionSpec};
use flywheel_api::training::{NamedDataset, TrainResult};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder, Rgb, RgbImage};

const SIDE: u32 = 4096;
const IMAGES: usize = 20;
/// Peak resident memory allowed for a training run over twenty 4096x4096 PNGs with the
/// generated 64x64 classifier (documented in docs/trainer.md): about 20 MiB for the process,
/// two images being decoded at 48 MiB each, and margin. Holding every decoded image would
/// take 20 x 48 MiB = 960 MiB on its own (the trainer used to peak at about 1.1 GiB here).
const PEAK_RSS_BUDGET_MIB: u64 = 256;

/// A solid-colour PNG: it compresses to almost nothing, so writing it is quick.
fn solid_png(side: u32, colour: [u8; 3]) -> Vec<u8> {
    let img = RgbImage::from_pixel(side, side, Rgb(colour));
    let mut out = Vec::new();
    PngEncoder::new_with_quality(Cursor::new(&mut out), CompressionType::Fast, FilterType::Sub)
        .write_image(img.as_raw(), side, side, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// An ImageFolder dataset of `IMAGES` solid 4096x4096 PNGs, one colour per class.
fn large_image_folder(root: &Path) -> NamedDataset {
    let labels: Vec<String> = flywheel_trainer::generate::DEFAULT_LABELS.iter().map(|s| s.to_string()).collect();
    let colours = [[220, 40, 40], [40, 200, 60], [50, 70, 230]];
    let pngs: Vec<Vec<u8>> = colours.iter().map(|c| solid_png(SIDE, *c)).collect();
    for i in 0..IMAGES {
        let dir = root.join(&labels[i % labels.len()]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{i:03}.png")), &pngs[i % labels.len()]).unwrap();
    }
    NamedDataset {
        name: "large".into(),
        spec: DatasetVersionSpec {
            uri: StorageUri(file_uri(root)),
            format: DatasetFormat::Imagefolder,
            task: Task::Classification,
            labels,
            parent: None,
            feedback: false,
            manifest: None,
            credentials: None,
        },
    }
}

/// Runs the trainer on `request_file`; returns its exit code and its peak resident set in
/// bytes: the `VmHWM` of its own address space, read from /proc while it runs (monotonic, so the
/// last reading is the peak up to 20 ms before the exit). Not `wait4`'s `ru_maxrss`: Linux
/// carries into it the high-water mark of the address space the child had before `exec`, which
/// is this test process's own (its size depends on what the other tests of the binary load).
fn train_with_peak_rss(request_file: &Path, stderr_file: &Path) -> (i32, u64) {
    let mut child = std::process::Command::new(BIN)
        .args(["train", "--request"])
        .arg(request_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(stderr_file).unwrap())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let code = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(peak_kib > 0, "no VmHWM was read from {status_file}");
    (code, peak_kib * 1024)
}

#[test]
fn training_on_twenty_4096_pixel_images_stays_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let ds = large_image_folder(&dir.path().join("large"));
    let out = dir.path().join("run");
    let mut req = request(model(dir.path(), Task::Classification, 1), vec![ds], &out, 1, 0.05);
    // Accuracy cannot drop by more than 1: the run is never refused, whatever one epoch does.
    req.max_regression = 1.0;
    let request_file = dir.path().join("request.json");
    std::fs::write(&request_file, serde_json::to_vec(&req).unwrap()).unwrap();
    let stderr_file = dir.path().join("stderr.txt");

    let (code, peak) = train_with_peak_rss(&request_file, &stderr_file);
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    assert_eq!(code, 0, "training failed: {stderr}");
    let result: TrainResult = serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(result.train_samples + result.eval_samples, IMAGES as u64);
    let peak_mib = peak / (1024 * 1024);
    eprintln!("peak RSS of the trainer over {IMAGES} {SIDE}x{SIDE} PNGs: {peak_mib} MiB");
    assert!(peak_mib < PEAK_RSS_BUDGET_MIB, "peak RSS {peak_mib} MiB exceeds the {PEAK_RSS_BUDGET_MIB} MiB budget");
}

/// CRC-32 (ISO-HDLC, PNG's chunk checksum).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A small valid PNG whose header is rewritten to declare `width` x `height`: its data would
/// not fill that, so only a check of the header (not the decoder) can give a clear error.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = solid_png(1, [255, 0, 0]);
    // Signature (8), IHDR length (4) and type (4), then width and height, then 5 more data bytes.
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[test]
fn the_test_png_header_is_valid() {
    let png = png_declaring(300, 200);
    let dims = image::ImageReader::new(Cursor::new(&png)).with_guessed_format().unwrap().into_dimensions().unwrap();
    assert_eq!(dims, (300, 200));
}

#[tokio::test]
async fn an_image_declaring_more_than_64_mi_pixels_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), "folders", Task::Classification, DatasetFormat::Imagefolder, 12, 13).await;
    let huge = dir.path().join("folders/circle/000003.png");
    std::fs::write(&huge, png_declaring(8193, 8192)).unwrap();
    let out = dir.path().join("run");
    let req = request(model(dir.path(), Task::Classification, 1), vec![ds.clone()], &out, 1, 0.01);
    let err = flywheel_trainer::train::run(&req).await.expect_err("training must fail").to_string();
    assert!(err.contains(&huge.display().to_string()), "{err}");
    assert!(err.contains("8193x8192") && err.contains("67108864"), "{err}");
    assert!(!out.join("result.json").exists());
    // Profiling reads images the same way.
    let req = flywheel_api::training::ProfileRequest {
        dataset: ds,
        output_uri: StorageUri(file_uri(&dir.path().join("ref"))),
    };
    let err = flywheel_trainer::profile::run(&req, None).await.expect_err("profiling must fail").to_string();
    assert!(err.contains(&huge.display().to_string()) && err.contains("8193x8192"), "{err}");
    // Exactly 64 Mi pixels passes the header check; then the (too short) data fails to decode.
    std::fs::write(&huge, png_declaring(8192, 8192)).unwrap();
    let err = flywheel_trainer::profile::run(&req, None).await.expect_err("profiling must fail").to_string();
    assert!(err.contains(&huge.display().to_string()) && err.contains("cannot decode image"), "{err}");
    assert!(!err.contains("8192x8192"), "{err}");
}
