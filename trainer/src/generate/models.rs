//! Small generated ONNX models: a classifier (logits) and a YOLO-style detector whose output the
//! inference server's `yolo` decoder reads ([N, 4 + classes, anchors], boxes as centre x,
//! centre y, width, height in input pixels, class scores after a sigmoid, no objectness).
//!
//! Weights are seeded He-normal; the last layer (the "head" the trainer fine-tunes by default)
//! starts near zero, so an untrained model is close to chance and fine-tuning has something to
//! improve. Decoding constants are `Constant` nodes, not initializers, so training never
//! changes them.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::onnx_builder::{Attr, Dim, GraphBuilder, float_tensor, int64_tensor};

pub const INPUT_NAME: &str = "images";
/// Detector grid stride in pixels (three stride-2 convolutions).
pub const DETECTOR_STRIDE: u32 = 8;

struct Init(ChaCha8Rng);

impl Init {
    fn normal(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                // Box-Muller: two uniforms to one standard normal.
                let u1: f32 = self.0.random_range(f32::EPSILON..1.0);
                let u2: f32 = self.0.random();
                (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos() * std
            })
            .collect()
    }

    /// Conv weight [out, in, k, k] with He initialisation, and a zero bias.
    fn conv(
        &mut self,
        g: &mut GraphBuilder,
        name: &str,
        cout: i64,
        cin: i64,
        k: i64,
        std: Option<f32>,
    ) -> (String, String) {
        let fan_in = (cin * k * k) as f32;
        let std = std.unwrap_or((2.0 / fan_in).sqrt());
        let w = g.initializer(
            &format!("{name}.weight"),
            &[cout, cin, k, k],
            self.normal((cout * cin * k * k) as usize, std),
        );
        let b = g.initializer(&format!("{name}.bias"), &[cout], vec![0.0; cout as usize]);
        (w, b)
    }
}

fn conv(g: &mut GraphBuilder, x: &str, w: &str, b: &str, k: i64, stride: i64) -> String {
    let p = k / 2;
    g.node(
        "Conv",
        &[x, w, b],
        &[],
        vec![
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("strides", Attr::Ints(vec![stride, stride])),
            ("pads", Attr::Ints(vec![p, p, p, p])),
        ],
    )
}

fn conv_relu(g: &mut GraphBuilder, init: &mut Init, name: &str, x: &str, cin: i64, cout: i64) -> String {
    let (w, b) = init.conv(g, name, cout, cin, 3, None);
    let y = conv(g, x, &w, &b, 3, 2);
    g.node("Relu", &[&y], &[], vec![])
}

fn check_size(size: u32, multiple: u32) -> Result<(), String> {
    if size < multiple * 2 || !size.is_multiple_of(multiple) {
        return Err(format!("image size {size} must be a multiple of {multiple} and at least {}", multiple * 2));
    }
    Ok(())
}

/// Classifier: two stride-2 conv+ReLU, global average pool, a Gemm head → logits [N, classes].
pub fn classifier(classes: usize, size: u32, seed: u64) -> Result<Vec<u8>, String> {
    check_size(size, 4)?;
    let c = classes as i64;
    let mut init = Init(ChaCha8Rng::seed_from_u64(seed));
    let mut g = GraphBuilder::new("flywheel-classifier");
    let s = size as i64;
    g.input(INPUT_NAME, &[Dim::Named("N"), Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)]);
    let x = conv_relu(&mut g, &mut init, "backbone.0", INPUT_NAME, 3, 16);
    let x = conv_relu(&mut g, &mut init, "backbone.1", &x, 16, 32);
    let x = g.node("GlobalAveragePool", &[&x], &[], vec![]);
    let x = g.node("Flatten", &[&x], &[], vec![("axis", Attr::Int(1))]);
    let w = g.initializer("head.weight", &[c, 32], init.normal((c * 32) as usize, 0.01));
    let b = g.initializer("head.bias", &[c], vec![0.0; classes]);
    g.node("Gemm", &[&x, &w, &b], &["logits"], vec![("transB", Attr::Int(1))]);
    g.output("logits", &[Dim::Named("N"), Dim::Fixed(c)]);
    Ok(g.finish("Flywheel synthetic-shapes classifier"))
}

/// Detector: three stride-2 conv+ReLU to a grid of size/8, a 3x3 conv head with 4 + classes
/// channels per cell, then a fixed decode: sigmoid, centre = (cell + offset) * stride, size =
/// sigmoid * image size, reshaped to [N, 4 + classes, cells].
pub fn detector(classes: usize, size: u32, seed: u64) -> Result<Vec<u8>, String> {
    check_size(size, DETECTOR_STRIDE)?;
    let c = classes as i64;
    let fields = 4 + c;
    let grid = (size / DETECTOR_STRIDE) as i64;
    let stride = DETECTOR_STRIDE as f32;
    let mut init = Init(ChaCha8Rng::seed_from_u64(seed));
    let mut g = GraphBuilder::new("flywheel-detector");
    let s = size as i64;
    g.input(INPUT_NAME, &[Dim::Named("N"), Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)]);
    let x = conv_relu(&mut g, &mut init, "backbone.0", INPUT_NAME, 3, 16);
    let x = conv_relu(&mut g, &mut init, "backbone.1", &x, 16, 32);
    let x = conv_relu(&mut g, &mut init, "backbone.2", &x, 32, 32);
    let (w, b) = init.conv(&mut g, "head", fields, 32, 3, Some(0.01));
    let raw = conv(&mut g, &x, &w, &b, 3, 1);
    let sig = g.node("Sigmoid", &[&raw], &[], vec![]);
    // Per-channel scale and per-cell offset: [1, fields, grid, grid].
    let plane = (grid * grid) as usize;
    let mut scale = vec![1f32; fields as usize * plane];
    let mut offset = vec![0f32; fields as usize * plane];
    for gy in 0..grid as usize {
        for gx in 0..grid as usize {
            let i = gy * grid as usize + gx;
            scale[i] = stride;
            scale[plane + i] = stride;
            scale[2 * plane + i] = size as f32;
            scale[3 * plane + i] = size as f32;
            offset[i] = gx as f32 * stride;
            offset[plane + i] = gy as f32 * stride;
        }
    }
    let dims = [1, fields, grid, grid];
    let scale = g.constant("decode.scale", float_tensor("decode.scale", &dims, scale));
    let offset = g.constant("decode.offset", float_tensor("decode.offset", &dims, offset));
    let scaled = g.node("Mul", &[&sig, &scale], &[], vec![]);
    let decoded = g.node("Add", &[&scaled, &offset], &[], vec![]);
    let shape = g.constant("decode.shape", int64_tensor("decode.shape", &[3], vec![-1, fields, grid * grid]));
    g.node("Reshape", &[&decoded, &shape], &["output0"], vec![]);
    g.output("output0", &[Dim::Named("N"), Dim::Fixed(fields), Dim::Fixed(grid * grid)]);
    Ok(g.finish("Flywheel synthetic-shapes detector (YOLO-style output [N, 4 + classes, anchors])"))
}
