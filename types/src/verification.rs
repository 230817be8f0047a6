//! Verification at registration: the Job the operator starts for a new ModelVersion loads the
//! artifact with the runtime, checks the declared contract against the graph, runs a probe
//! image through pre-processing, the model and the decoder, and prints one [`Verification`]
//! line the operator reads from the Job's log and records in the ModelVersion's status.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::serving::ServedModel;

/// The line of the verification Job's output that carries the result (then one JSON object).
pub const REPORT_PREFIX: &str = "FLYWHEEL_VERIFICATION ";

/// The op-histogram entry that counts op types folded away to keep a report small.
pub const OTHER_OPS: &str = "(other)";

/// A model input or output as the graph declares it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TensorSignature {
    pub name: String,
    /// OIP datatype name (FP32, INT64, ...).
    pub datatype: String,
    /// Dimensions; -1 where the graph leaves one open (a dynamic batch).
    pub shape: Vec<i64>,
}

/// What verifying one artifact against one contract found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// sha256 of the artifact verified: the result holds for this digest and contract only.
    pub digest: String,
    /// [`contract_hash`] of the task, labels, input and output spec verified.
    pub contract: String,
    /// The model loads, fits its input and output spec, and decodes a probe image.
    pub passed: bool,
    /// Why it did not pass, naming the output, shape or op and how to fix the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub inputs: Vec<TensorSignature>,
    #[serde(default)]
    pub outputs: Vec<TensorSignature>,
    /// Nodes per op type in the main graph.
    #[serde(default)]
    pub ops: BTreeMap<String, u32>,
    /// Values held in the graph's initializers (weights).
    #[serde(default)]
    pub parameters: u64,
    /// Median time of the probe through the model alone, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_latency_ms: Option<f64>,
    /// Shapes the probe image decoded to at a zero threshold (bounded by the spec's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_shapes: Option<u32>,
}

/// A stable digest of the parts of a model's contract verification checks: a change to any of
/// them needs a new verification, a change elsewhere (e.g. a description) does not.
pub fn contract_hash(model: &ServedModel) -> String {
    let text = serde_json::to_string(&(&model.task, &model.labels, &model.input, &model.output))
        .expect("the contract serialises");
    // FNV-1a, 64 bits: a cache key, not a security boundary (the artifact digest is sha256).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Verification {
    /// The report line the Job prints.
    pub fn report_line(&self) -> String {
        format!("{REPORT_PREFIX}{}", serde_json::to_string(self).expect("the report serialises"))
    }

    /// The report as JSON of at most `max_bytes` (a termination message holds 4 KiB): the
    /// rarest op types are folded into one `(other)` entry, then the message is cut.
    pub fn to_json_within(&self, max_bytes: usize) -> String {
        let mut v = self.clone();
        loop {
            let json = serde_json::to_string(&v).expect("the report serialises");
            if json.len() <= max_bytes {
                return json;
            }
            let rarest = v.ops.iter().filter(|(k, _)| k.as_str() != OTHER_OPS).min_by_key(|(_, n)| **n);
            if let Some((op, n)) = rarest.map(|(k, n)| (k.clone(), *n)) {
                v.ops.remove(&op);
                *v.ops.entry(OTHER_OPS.to_string()).or_default() += n;
            } else if let Some(m) = v.message.as_mut().filter(|m| m.len() > 64) {
                let cut = m.floor_char_boundary(m.len() / 2);
                m.truncate(cut);
                m.push('…');
            } else {
                return json;
            }
        }
    }

    /// The last report line in a Job's output, if any.
    pub fn from_output(output: &str) -> Option<Result<Self, serde_json::Error>> {
        output.lines().rev().find_map(|l| l.trim().strip_prefix(REPORT_PREFIX)).map(serde_json::from_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InputSpec, OutputSpec, Task};

    fn model() -> ServedModel {
        ServedModel {
            name: "m".into(),
            version: "v1".into(),
            uri: "file:///m.onnx".into(),
            sha256: "ab".into(),
            task: Task::Classification,
            labels: vec!["cat".into(), "dog".into()],
            input: InputSpec::new(224, 224),
            output: OutputSpec::default(),
        }
    }

    #[test]
    fn the_contract_hash_follows_the_contract_only() {
        let m = model();
        let moved = ServedModel { uri: "s3://b/m.onnx".into(), version: "v2".into(), ..model() };
        assert_eq!(contract_hash(&m), contract_hash(&moved));
        let relabelled = ServedModel { labels: vec!["cat".into()], ..model() };
        assert_ne!(contract_hash(&m), contract_hash(&relabelled));
        let resized = ServedModel { input: InputSpec::new(256, 224), ..model() };
        assert_ne!(contract_hash(&m), contract_hash(&resized));
    }

    #[test]
    fn a_large_report_folds_its_rarest_ops_to_fit() {
        let ops = (0..300).map(|i| (format!("CustomOp{i:03}"), i + 1)).collect();
        let v = Verification { digest: "ab".into(), ops, parameters: 7, ..Default::default() };
        let json = v.to_json_within(4096);
        assert!(json.len() <= 4096, "{}", json.len());
        let small: Verification = serde_json::from_str(&json).unwrap();
        assert_eq!(small.ops.values().sum::<u32>(), v.ops.values().sum::<u32>());
        assert!(small.ops.contains_key(OTHER_OPS) && small.ops.contains_key("CustomOp299"));
        assert_eq!(small.parameters, 7);
    }

    #[test]
    fn the_report_is_found_after_other_output() {
        let v = Verification { digest: "ab".into(), passed: true, parameters: 12, ..Default::default() };
        let out = format!("loading\n{}\nbye\n", v.report_line());
        assert_eq!(Verification::from_output(&out).unwrap().unwrap(), v);
        assert!(Verification::from_output("no report").is_none());
        assert!(Verification::from_output(&format!("{REPORT_PREFIX}{{not json")).unwrap().is_err());
    }
}
