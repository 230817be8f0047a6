//! Whole-model comparisons against onnxruntime on generated vision models
//! (runtime/python/gen_models.py writes them and onnxruntime's outputs into the cache).

mod common;

use flywheel_runtime::Model;

const MODELS: &[&str] = &["classifier", "detector", "mobilenet", "encoder_decoder", "plain_cnn"];

#[test]
fn generated_models_match_onnxruntime() {
    let dir = common::generate("gen_models.py", &[]);
    let mut failures = Vec::new();
    for name in MODELS {
        let d = dir.join(name);
        let model =
            Model::from_bytes(&std::fs::read(d.join("model.onnx")).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let x = common::read_tensor(&d.join("input_0.pb"));
        let outs = model.run(&[("images", x.clone())]).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, (out_name, got)) in outs.iter().enumerate() {
            let want = common::read_tensor(&d.join(format!("output_{i}.pb")));
            let err = common::rel_err(got, &want);
            println!("{name}/{out_name}: relative error {err:.2e} ({} nodes planned)", model.node_count());
            if err > 1e-4 {
                failures.push(format!("{name}/{out_name}: {err:.2e}"));
            }
        }
        // Batched execution equals per-sample execution.
        let samples: Vec<_> = (0..x.dims()[0]).map(|i| x.narrow(0, i, 1).unwrap()).collect();
        let batched = model.run_batch(&samples).unwrap();
        for (i, per) in batched.iter().enumerate() {
            let single = model.run(&[("images", samples[i].clone())]).unwrap();
            for ((_, a), (_, b)) in per.iter().zip(&single) {
                assert!(common::rel_err(a, b) < 1e-5, "{name}: run_batch differs from run for sample {i}");
            }
        }
    }
    assert!(failures.is_empty(), "models differing from onnxruntime by more than 1e-4: {failures:?}");
}

#[test]
fn unsupported_op_is_rejected_at_load_naming_the_node() {
    let dir = common::generate("gen_models.py", &[]);
    let bytes = std::fs::read(dir.join("classifier/model.onnx")).unwrap();
    use prost::Message;
    let mut proto = flywheel_runtime::proto_types::ModelProto::decode(bytes.as_slice()).unwrap();
    let node = &mut proto.graph.as_mut().unwrap().node[0];
    node.op_type = "LpNormalization".into();
    let name = node.name.clone();
    let err = Model::from_proto(&proto).unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("LpNormalization"), "{err}");
}

#[test]
fn one_model_serves_several_threads_and_rejects_bad_inputs() {
    let dir = common::generate("gen_models.py", &[]);
    let d = dir.join("detector");
    let model = Model::from_bytes(&std::fs::read(d.join("model.onnx")).unwrap()).unwrap();
    let x = common::read_tensor(&d.join("input_0.pb"));
    let want = common::read_tensor(&d.join("output_0.pb"));
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..3 {
                    let got = model.run(&[("images", x.clone())]).unwrap().remove(0).1;
                    assert!(common::rel_err(&got, &want) < 1e-4);
                }
            });
        }
    });
    let info = &model.inputs()[0];
    assert_eq!(info.name, "images");
    assert!(info.dynamic_batch());
    let wrong_channels =
        candle_core::Tensor::zeros((1, 4, 64, 64), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let err = model.run(&[("images", wrong_channels)]).unwrap_err().to_string();
    assert!(err.contains("images") && err.contains("shape"), "{err}");
    let wrong_dtype = x.to_dtype(candle_core::DType::F64).unwrap();
    assert!(model.run(&[("images", wrong_dtype)]).unwrap_err().to_string().contains("dtype"));
    assert!(model.run(&[]).unwrap_err().to_string().contains("missing input 'images'"));
}
