//! Runs ONE ONNX backend node test directory (model.onnx + test_data_set_*/) and reports the
//! outcome through its exit code, so a harness can run each test in its own process:
//! 0 pass, 1 wrong answer, 2 rejected at load, 3 error while running.

use clap::Parser;
use flywheel_runtime::{Model, Tensor, Value, proto_types::TensorProto};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
struct Args {
    /// The test directory.
    dir: PathBuf,
    /// Relative tolerance (the ONNX backend test default).
    #[arg(long, default_value_t = 1e-3)]
    rtol: f64,
    #[arg(long, default_value_t = 1e-7)]
    atol: f64,
}

fn read_value(p: &Path) -> anyhow::Result<(String, Value)> {
    let proto = TensorProto::decode(std::fs::read(p)?.as_slice())?;
    Ok((proto.name.clone(), flywheel_runtime::value_from_proto(&proto)?))
}

fn values(t: &Tensor) -> anyhow::Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?)
}

/// String outputs must match exactly: same shape, same bytes.
fn compare_values(got: &Value, want: &Value, rtol: f64, atol: f64) -> Result<(), String> {
    match (got, want) {
        (Value::Tensor(g), Value::Tensor(w)) => {
            // bfloat16 carries 8 significant bits: allow one unit in the last place.
            let rtol = if w.dtype() == candle_core::DType::BF16 { rtol.max(1.0 / 128.0) } else { rtol };
            compare(g, w, rtol, atol)
        }
        (Value::Strings(g), Value::Strings(w)) => {
            if g.dims() != w.dims() {
                return Err(format!("shape {:?}, expected {:?}", g.dims(), w.dims()));
            }
            match g.data().iter().zip(w.data()).position(|(a, b)| a != b) {
                Some(i) => Err(format!(
                    "element {i}: {:?} vs expected {:?}",
                    String::from_utf8_lossy(&g.data()[i]),
                    String::from_utf8_lossy(&w.data()[i])
                )),
                None => Ok(()),
            }
        }
        (Value::Tensor(_), Value::Strings(_)) => Err("a numeric tensor, expected strings".into()),
        (Value::Strings(_), Value::Tensor(_)) => Err("a string tensor, expected a numeric one".into()),
    }
}

fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    // Element types are compared as held in candle (bool as u8, int8/uint16/uint64 widened).
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {:?}, expected {:?}", got.dtype(), want.dtype()));
    }
    if got.dims() != want.dims() {
        return Err(format!("shape {:?}, expected {:?}", got.dims(), want.dims()));
    }
    let (g, w) = (values(got).map_err(|e| e.to_string())?, values(want).map_err(|e| e.to_string())?);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= atol + rtol * b.abs();
        if !ok {
            return Err(format!("element {i}: {a} vs expected {b}"));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bytes = match std::fs::read(args.dir.join("model.onnx")) {
        Ok(b) => b,
        Err(e) => {
            println!("ERROR reading model: {e}");
            return ExitCode::from(3);
        }
    };
    let model = match Model::from_bytes(&bytes) {
        Ok(m) => m,
        Err(e) => {
            println!("REJECTED {e}");
            return ExitCode::from(2);
        }
    };
    let mut sets: Vec<PathBuf> =
        std::fs::read_dir(&args.dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    sets.sort();
    for set in sets {
        let run = || -> anyhow::Result<Result<(), String>> {
            let mut inputs = Vec::new();
            let mut outputs = Vec::new();
            let mut i = 0;
            while set.join(format!("input_{i}.pb")).exists() {
                inputs.push(read_value(&set.join(format!("input_{i}.pb")))?);
                i += 1;
            }
            let mut j = 0;
            while set.join(format!("output_{j}.pb")).exists() {
                outputs.push(read_value(&set.join(format!("output_{j}.pb")))?);
                j += 1;
            }
            // Bind inputs by the model's declared input order (the .pb names may be empty).
            let infos = model.inputs();
            let named: Vec<(&str, Value)> =
                infos.iter().zip(inputs).map(|(info, (_, t))| (info.name.as_str(), t)).collect();
            let got = model.run_values(&named)?;
            for (k, (_, want)) in outputs.iter().enumerate() {
                let Some((_, g)) = got.get(k) else { return Ok(Err(format!("missing output {k}"))) };
                if let Err(e) = compare_values(g, want, args.rtol, args.atol) {
                    return Ok(Err(format!("output {k}: {e}")));
                }
            }
            Ok(Ok(()))
        };
        match run() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                println!("WRONG {}: {e}", set.display());
                return ExitCode::from(1);
            }
            Err(e) => {
                println!("ERROR {e}");
                return ExitCode::from(3);
            }
        }
    }
    println!("PASS");
    ExitCode::SUCCESS
}
