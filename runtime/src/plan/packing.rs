//! Convolutions whose weights are constants of the inference plan get a cache for the direct
//! kernel's packed weights (`kernels::direct`), filled on their first run: packing them on every
//! run would re-read and re-write every weight, 100 MB per ResNet-50 run.

use crate::graph::Graph;
use crate::ops::Op;

pub(super) fn keep_packed_weights(g: &mut Graph) {
    for n in &mut g.nodes {
        let w = n.inputs.get(1).copied().flatten();
        if let Op::Conv(c) = &mut n.op
            && w.is_some_and(|w| g.consts.contains_key(&w))
        {
            c.packed = Some(Default::default());
        }
    }
}
