//! TopK and NonMaxSuppression graphs against onnxruntime (runtime/python/gen_select_models.py
//! writes them into the cache): detector post-processing with NMS inside the graph, on boxes and
//! scores on a coarse grid so that equal scores and IoU values exactly on the threshold decide
//! the outputs. Every output must equal onnxruntime's exactly.

mod common;

use flywheel_runtime::{Model, Tensor, proto_types::TensorProto};
use prost::Message;

const MODELS: &[&str] = &["nms_yolo", "nms_topk_corners", "topk_variants", "topk_opset1"];

fn read_named(p: &std::path::Path) -> (String, Tensor) {
    let proto = TensorProto::decode(std::fs::read(p).unwrap().as_slice()).unwrap();
    (proto.name.clone(), flywheel_runtime::tensor_from_proto(&proto).unwrap())
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1().unwrap()
}

#[test]
fn selection_graphs_match_onnxruntime_exactly() {
    let root = common::generate("gen_select_models.py", &[]);
    let mut failures = Vec::new();
    for name in MODELS {
        let d = root.join(name);
        let model =
            Model::from_bytes(&std::fs::read(d.join("model.onnx")).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let inputs: Vec<(String, Tensor)> =
            (0..).map(|i| d.join(format!("input_{i}.pb"))).take_while(|p| p.exists()).map(|p| read_named(&p)).collect();
        let named: Vec<(&str, Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let outs = model.run(&named).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, (out_name, got)) in outs.iter().enumerate() {
            let want = common::read_tensor(&d.join(format!("output_{i}.pb")));
            let same = got.dtype() == want.dtype() && got.dims() == want.dims() && values(got) == values(&want);
            println!(
                "{name}/{out_name}: {:?} {:?}, {}",
                got.dtype(),
                got.dims(),
                if same { "equal" } else { "DIFFERENT" }
            );
            if !same {
                failures.push(format!(
                    "{name}/{out_name}: got {:?} {:?}, onnxruntime {:?} {:?}",
                    got.dtype(),
                    got.dims(),
                    want.dtype(),
                    want.dims()
                ));
            }
        }
        assert_eq!(outs.len(), (0..).take_while(|i| d.join(format!("output_{i}.pb")).exists()).count(), "{name}");
    }
    assert!(failures.is_empty(), "outputs differing from onnxruntime: {failures:#?}");
}

/// In nms_yolo some classes keep fewer boxes than the limit and some are cut by it, and the
/// IoU threshold sits exactly on IoU values of the grid: moving it by one f32 step changes the
/// selection. So the comparison above covers the limit, the strict score threshold and the
/// direction of the IoU comparison, not only the easy cases.
#[test]
fn nms_case_exercises_the_limit_and_the_iou_boundary() {
    let root = common::generate("gen_select_models.py", &[]);
    let d = root.join("nms_yolo");
    let sel = common::read_tensor(&d.join("output_0.pb"));
    let rows: Vec<Vec<i64>> = sel.to_vec2().unwrap();
    let per_class: Vec<usize> = (0..3).map(|c| rows.iter().filter(|r| r[1] == c).count()).collect();
    assert!(per_class.contains(&90) && per_class.iter().any(|&n| n < 90), "{per_class:?}");
    let bytes = std::fs::read(d.join("model.onnx")).unwrap();
    let mut proto = flywheel_runtime::proto_types::ModelProto::decode(bytes.as_slice()).unwrap();
    let iou = proto.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == "iou").unwrap();
    let below = f32::from_bits(0.5f32.to_bits() - 1);
    *iou =
        TensorProto { name: "iou".into(), data_type: 1, dims: vec![1], float_data: vec![below], ..Default::default() };
    let model = Model::from_proto(&proto).unwrap();
    let inputs: Vec<(String, Tensor)> = (0..2).map(|i| read_named(&d.join(format!("input_{i}.pb")))).collect();
    let named: Vec<(&str, Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let got = model.run(&named).unwrap().remove(0).1;
    assert_ne!(got.to_vec2::<i64>().unwrap(), rows, "an IoU threshold just below 0.5 selects the same boxes");
}
