//! The model backend seen by the server: a synchronous batch-in, tensors-out function that
//! runs on the batcher's own thread. The ONNX runtime implements it (`runtime_backend.rs`);
//! keeping the trait small lets the HTTP layer be built and unit-tested independently.

/// A dense little-endian f32 tensor (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorF32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl TensorF32 {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, BackendError> {
        // Checked: a request may declare a shape whose product overflows (and would wrap to
        // a small number that matches its data).
        let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let Some(n) = n else {
            return Err(BackendError::Input(format!("shape {shape:?} holds more values than fit in memory")));
        };
        if n != data.len() {
            return Err(BackendError::Input(format!("shape {shape:?} holds {n} values but {} were given", data.len())));
        }
        Ok(Self { shape, data })
    }

    /// Number of values per item of the leading (batch) dimension.
    pub fn item_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Rows `start..start + n` of the leading dimension.
    fn rows(&self, start: usize, n: usize) -> TensorF32 {
        let item = self.item_len();
        let mut shape = self.shape.clone();
        shape[0] = n;
        TensorF32 { shape, data: self.data[start * item..(start + n) * item].to_vec() }
    }
}

/// Splits a batch's outputs along their leading dimension into consecutive shares of `sizes`
/// rows each: the batcher's share per caller, and the per-image outputs the decoder reads.
pub fn split_rows(outs: &[TensorF32], sizes: &[usize]) -> Result<Vec<Vec<TensorF32>>, BackendError> {
    let total: usize = sizes.iter().sum();
    let mut shares: Vec<Vec<TensorF32>> = sizes.iter().map(|_| Vec::with_capacity(outs.len())).collect();
    for out in outs {
        if out.shape.first() != Some(&total) {
            return Err(BackendError::Shape(format!(
                "output shape {:?} does not keep the batch size {total}",
                out.shape
            )));
        }
        let mut start = 0;
        for (share, &n) in shares.iter_mut().zip(sizes) {
            share.push(out.rows(start, n));
            start += n;
        }
    }
    Ok(shares)
}

/// Name, element type and shape (None = dynamic) of one model input or output.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<Option<usize>>,
}

/// Clone: one failed batch answers every caller that was part of it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BackendError {
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The request's tensor does not fit the model: the caller's mistake.
    #[error("input does not fit the model: {0}")]
    Input(String),
    /// The model's outputs are not what the server needs (a model defect).
    #[error("output shape mismatch: {0}")]
    Shape(String),
    #[error("execution failed: {0}")]
    Execution(String),
}

/// What a model's graph holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphSummary {
    pub ops: std::collections::BTreeMap<String, u32>,
    pub parameters: u64,
}

pub trait ModelBackend: Send + Sync + 'static {
    /// The model's single image input.
    fn input(&self) -> &TensorInfo;
    fn outputs(&self) -> &[TensorInfo];
    /// Runs a batch. `input.shape[0]` is the batch size; every output keeps it as its
    /// leading dimension.
    fn run(&self, input: &TensorF32) -> Result<Vec<TensorF32>, BackendError>;

    /// The op type of the node computing output `index` (e.g. `Softmax`), when known.
    fn output_op(&self, _index: usize) -> Option<String> {
        None
    }

    /// Nodes per op type and the number of weight values, when the backend knows its graph
    /// (the verification report shows them).
    fn graph_summary(&self) -> Option<GraphSummary> {
        None
    }

    /// The largest batch the model accepts (1 when its batch dimension is fixed to 1).
    fn max_batch(&self) -> usize {
        match self.input().shape.first() {
            Some(Some(n)) => *n,
            _ => usize::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shape_whose_product_overflows_is_refused() {
        // (2^52 + 1) * 3 * 64 * 64 wraps to 12,288 in 64 bits.
        let shape = vec![(1usize << 52) + 1, 3, 64, 64];
        let err = TensorF32::new(shape, vec![0.0; 12_288]).unwrap_err();
        assert!(matches!(err, BackendError::Input(_)), "{err:?}");
        assert!(err.to_string().contains("more values than fit"), "{err}");
        assert!(TensorF32::new(vec![2, 3], vec![0.0; 6]).is_ok());
    }

    #[test]
    fn split_rows_keeps_each_shares_rows() {
        let out = TensorF32::new(vec![3, 2], vec![0., 1., 2., 3., 4., 5.]).unwrap();
        let parts = split_rows(&[out], &[1, 2]).unwrap();
        assert_eq!(parts[0][0].data, vec![0., 1.]);
        assert_eq!(parts[1][0].shape, vec![2, 2]);
        assert_eq!(parts[1][0].data, vec![2., 3., 4., 5.]);
    }

    #[test]
    fn split_rows_rejects_outputs_without_the_batch_dimension() {
        let out = TensorF32::new(vec![2], vec![0., 1.]).unwrap();
        let err = split_rows(&[out], &[1, 2]).unwrap_err();
        assert!(matches!(err, BackendError::Shape(_)), "{err:?}");
    }
}
