//! SGD with momentum and AdamW over candle `Var`s.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use flywheel_api::data_pipeline::Optimizer as Kind;

use crate::error::Result;

const MOMENTUM: f64 = 0.9;
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
const WEIGHT_DECAY: f64 = 0.01;

pub struct Optimizer {
    kind: Kind,
    lr: f64,
    params: Vec<Var>,
    /// SGD velocity, or AdamW first moment.
    m: Vec<Tensor>,
    /// AdamW second moment.
    v: Vec<Tensor>,
    step: i32,
}

impl Optimizer {
    pub fn new(kind: Kind, lr: f64, params: Vec<Var>) -> Result<Self> {
        let zeros = |p: &Var| p.as_tensor().zeros_like();
        let m = params.iter().map(zeros).collect::<candle_core::Result<Vec<_>>>()?;
        let v = params.iter().map(zeros).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { kind, lr, params, m, v, step: 0 })
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        for (i, p) in self.params.iter().enumerate() {
            let Some(g) = grads.get(p.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            let theta = p.as_tensor().detach();
            match self.kind {
                Kind::Sgd => {
                    self.m[i] = ((&self.m[i] * MOMENTUM)? + &g)?;
                    p.set(&(theta - (&self.m[i] * self.lr)?)?)?;
                }
                Kind::Adamw => {
                    self.m[i] = ((&self.m[i] * BETA1)? + (&g * (1.0 - BETA1))?)?;
                    self.v[i] = ((&self.v[i] * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
                    let m_hat = (&self.m[i] / (1.0 - BETA1.powi(self.step)))?;
                    let v_hat = (&self.v[i] / (1.0 - BETA2.powi(self.step)))?;
                    let update = (m_hat / (v_hat.sqrt()? + EPS)?)?;
                    let decayed = (&theta * (1.0 - self.lr * WEIGHT_DECAY))?;
                    p.set(&(decayed - (update * self.lr)?)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn minimise(kind: Kind, lr: f64) -> f32 {
        let x = Var::new(&[3f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(kind, lr, vec![x.clone()]).unwrap();
        for _ in 0..200 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        x.as_tensor().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn both_optimisers_minimise_a_quadratic() {
        assert!(minimise(Kind::Sgd, 0.05) < 1e-3);
        assert!(minimise(Kind::Adamw, 0.1) < 1e-2);
    }
}
