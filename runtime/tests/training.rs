//! Training mode: gradients through candle Vars checked against finite differences, and one SGD
//! step written back to ONNX that onnxruntime loads and agrees with.

mod common;

use candle_core::{DType, Device, Tensor};
use flywheel_runtime::{Model, ParamFilter, TrainableModel};

fn loss(model: &TrainableModel, x: &Tensor, r: &Tensor) -> Tensor {
    let out = model.forward(&[("images", x.clone())]).unwrap();
    out[0].1.mul(r).unwrap().sum_all().unwrap()
}

fn check_gradients(filter: ParamFilter, model_name: &str, param_index: usize, eps: f32) {
    let dir = common::generate("gen_models.py", &[]);
    let bytes = std::fs::read(dir.join(model_name).join("model.onnx")).unwrap();
    let model = TrainableModel::from_bytes(&bytes).unwrap();
    let params = model.trainable_params(&filter);
    assert!(!params.is_empty());
    let x = common::read_tensor(&dir.join(model_name).join("input_0.pb"));
    let shape = model.forward(&[("images", x.clone())]).unwrap()[0].1.dims().to_vec();
    // A fixed pseudo-random projection (an LCG, values in -1..1): a random one made the
    // comparison's f32 noise, and so the test, vary from run to run.
    let mut state = 0x9e37_79b9_u32;
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect();
    let r = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
    let grads = loss(&model, &x, &r).backward().unwrap();
    let (name, var) = &params[param_index.min(params.len() - 1)];
    let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
    let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
    let gmax = g.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(gmax > 0.0, "{name}: zero gradient");
    let base: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    // Central differences on the largest-gradient elements (f32 noise is relatively smallest there).
    let mut order: Vec<usize> = (0..g.len()).collect();
    order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
    for &i in order.iter().take(3) {
        let eval = |delta: f32| {
            let mut v = base.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, var.as_tensor().shape(), &Device::Cpu).unwrap()).unwrap();
            loss(&model, &x, &r).to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
        };
        let fd = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
        var.set(&Tensor::from_vec(base.clone(), var.as_tensor().shape(), &Device::Cpu).unwrap()).unwrap();
        let err = (fd - g[i] as f64).abs() / (gmax as f64);
        println!("{model_name} {name}[{i}]: autograd {} finite-diff {fd} (rel {err:.2e})", g[i]);
        assert!(err < 2e-2, "{name}[{i}]: autograd {} vs finite difference {fd}", g[i]);
    }
}

#[test]
fn head_gradients_match_finite_differences() {
    check_gradients(ParamFilter::Head, "classifier", 0, 1e-2);
}

#[test]
fn full_network_gradients_match_finite_differences() {
    // All parameters: gradients flow through BatchNorm (frozen), padded MaxPool, residual Adds, GAP.
    // Small steps: ReLU/MaxPool kinks make larger finite differences inexact.
    check_gradients(ParamFilter::All, "classifier", 0, 1e-3);
    check_gradients(ParamFilter::All, "mobilenet", 3, 1e-3);
}

#[test]
fn sgd_step_round_trips_through_onnxruntime() {
    let dir = common::generate("gen_models.py", &[]);
    let d = dir.join("classifier");
    let model = TrainableModel::from_bytes(&std::fs::read(d.join("model.onnx")).unwrap()).unwrap();
    let params = model.trainable_params(&ParamFilter::Head);
    let x = common::read_tensor(&d.join("input_0.pb"));
    let out = model.forward(&[("images", x.clone())]).unwrap();
    let grads = out[0].1.sqr().unwrap().mean_all().unwrap().backward().unwrap();
    for (_, v) in &params {
        let g = grads.get(v.as_tensor()).unwrap();
        v.set(&(v.as_tensor() - (g * 0.5).unwrap()).unwrap()).unwrap();
    }
    let bytes = model.to_onnx_bytes().unwrap();
    let tmp = tempdir();
    std::fs::write(tmp.join("model.onnx"), &bytes).unwrap();
    let status = std::process::Command::new(common::python())
        .arg(common::script("ort_run.py"))
        .args([tmp.join("model.onnx"), d.join("input_0.pb"), tmp.clone()])
        .status()
        .unwrap();
    assert!(status.success(), "onnxruntime could not run the written model");
    let ort = common::read_tensor(&tmp.join("output_0.pb"));
    let ours = Model::from_bytes(&bytes).unwrap().run(&[("images", x)]).unwrap().remove(0).1;
    let before = common::read_tensor(&d.join("output_0.pb"));
    assert!(common::rel_err(&ours, &ort) < 1e-4, "updated model differs from onnxruntime");
    assert!(common::rel_err(&ours, &before) > 1e-3, "the SGD step did not change the model");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("train-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
