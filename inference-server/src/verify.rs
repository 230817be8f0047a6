//! `flywheel-inference-server verify`: what the operator's verification Job runs when a
//! ModelVersion is registered. It takes the same steps as a serving load (fetch and check the
//! digest, build the runtime model, resolve the output spec, check the input spec, warm up),
//! then runs a probe image through pre-processing, the model and the decoder, so a model that
//! could not serve is refused before any Deployment pulls it.

use std::path::Path;
use std::time::Instant;

use flywheel_types::verification::{TensorSignature, Verification, contract_hash};

use crate::backend::TensorInfo;
use crate::models::{self, BackendFactory, LoadedModel};
use crate::preprocess::ImageInput;
use crate::serving::ServedModel;

/// Probe runs timed; the median is reported.
const PROBE_RUNS: usize = 5;

/// Verifies `spec`'s artifact against its contract. A model that fails is a result
/// (`passed: false` with the reason), not an error: errors are for the Job itself.
pub async fn verify(spec: &ServedModel, cache_dir: &Path, factory: &BackendFactory) -> Verification {
    let mut v = Verification { digest: spec.sha256.clone(), contract: contract_hash(spec), ..Default::default() };
    let backend = match models::build_backend(spec, cache_dir, factory).await {
        Ok(b) => b,
        Err(e) => return failed(v, e),
    };
    v.inputs = vec![signature(backend.input())];
    v.outputs = backend.outputs().iter().map(signature).collect();
    if let Some(summary) = backend.graph_summary() {
        v.ops = summary.ops;
        v.parameters = summary.parameters;
    }
    let model = match models::plan(spec, backend) {
        Ok(m) => m,
        Err(e) => return failed(v, e),
    };
    if let Err(e) = models::warm_up(&model).await {
        return failed(v, e);
    }
    match probe(&model).await {
        Ok((latency_ms, shapes)) => {
            v.passed = true;
            v.probe_latency_ms = Some(latency_ms);
            v.probe_shapes = Some(shapes);
        }
        Err(e) => return failed(v, e),
    }
    v
}

fn failed(mut v: Verification, message: String) -> Verification {
    v.passed = false;
    v.message = Some(message);
    v
}

fn signature(t: &TensorInfo) -> TensorSignature {
    TensorSignature {
        name: t.name.clone(),
        datatype: t.datatype.to_string(),
        shape: t.shape.iter().map(|d| d.map_or(-1, |n| n as i64)).collect(),
    }
}

/// A 640x480 photo-like probe (gradients, a bright disc and a dark square), so the pre-processing
/// resizes and, for letterbox models, pads, as it does for real traffic.
fn probe_image() -> image::RgbImage {
    image::RgbImage::from_fn(640, 480, |x, y| {
        let disc = (x as i64 - 200).pow(2) + (y as i64 - 240).pow(2) < 90 * 90;
        let square = (400..520).contains(&x) && (120..240).contains(&y);
        if disc {
            image::Rgb([240, 200, 40])
        } else if square {
            image::Rgb([20, 30, 60])
        } else {
            image::Rgb([(x / 3) as u8, (y / 2) as u8, ((x + y) / 5) as u8])
        }
    })
}

/// Median latency of the probe through the model (ms) and the shapes it decodes to.
async fn probe(model: &LoadedModel) -> Result<(f64, u32), String> {
    let rgb = probe_image();
    let decoded = crate::preprocess::DecodedImage { rgb, format: image::ImageFormat::Png };
    let input = ImageInput { bytes: Default::default(), decoded };
    let (tensor, invs) = model.prepare(std::slice::from_ref(&input)).map_err(|e| e.detail())?;
    let mut times = Vec::with_capacity(PROBE_RUNS);
    let mut outs = Vec::new();
    for _ in 0..PROBE_RUNS {
        let (b, t) = (model.backend.clone(), tensor.clone());
        let t0 = Instant::now();
        outs = tokio::task::spawn_blocking(move || b.run(&t))
            .await
            .map_err(|e| format!("the probe run panicked: {e}"))?
            .map_err(|e| format!("the probe run failed: {e}"))?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let shapes = model.decode(&outs, &invs, 0.0).map_err(|e| {
        format!("the probe's outputs do not fit the {:?} decoder: {}", model.spec.output.decoder, e.detail())
    })?;
    Ok((times[times.len() / 2], shapes.iter().map(Vec::len).sum::<usize>() as u32))
}
