using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>
/// Causal attention with a key padding mask. CPU twin and the math: src/NegDistill.Core/Ops/Attention.cs.
/// Forward: one group per (b, h, query t): scores over visible keys (threads stride over keys),
/// group max and sum by tree reduction, normalised probabilities written to att, then
/// out_t = Σ_s P_ts v_s with threads striding over the head dimension (coalesced v reads).
/// Backward: pass 1, one group per (b,h,t): dS row and dq_t; pass 2, one group per (b,h,s):
/// dk_s and dv_s by a loop over t ≥ s — no atomics, fixed summation order.
/// Memory: att and dS are (B,H,T,T); at the cut-off of 256 tokens that is what the paper's
/// settings need; a flash-style version that recomputes P is the next version of this family.
/// </summary>
public static class AttentionKernels
{
    public struct Dims { public int B, T, H, Hd; public float Scale; }

    public static void ForwardKernel(ArrayView<float> outp, ArrayView<float> att, ArrayView<float> q, ArrayView<float> k,
        ArrayView<float> v, ArrayView<float> keyMask, Dims d)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int rowId = Grid.IdxX;                 // (b·H + h)·T + t
        int t = rowId % d.T, bh = rowId / d.T, h = bh % d.H, b = bh / d.H;
        int C = d.H * d.Hd;
        long arow = (long)rowId * d.T;
        long qo = ((long)b * d.T + t) * C + h * d.Hd;
        float max = float.NegativeInfinity;
        for (int s = Group.IdxX; s <= t; s += Group.DimX)
        {
            if (keyMask[b * d.T + s] == 0f) continue;
            long ko = ((long)b * d.T + s) * C + h * d.Hd;
            float dot = 0f;
            for (int i = 0; i < d.Hd; i++) dot += q[qo + i] * k[ko + i];
            dot *= d.Scale;
            att[arow + s] = dot;
            if (dot > max) max = dot;
        }
        max = GroupReduce.Max(max, sh);
        float sum = 0f;
        for (int s = Group.IdxX; s < d.T; s += Group.DimX)
        {
            bool visible = s <= t && keyMask[b * d.T + s] != 0f;
            float e = visible ? MathF.Exp(att[arow + s] - max) : 0f;
            att[arow + s] = e;
            sum += e;
        }
        sum = GroupReduce.Sum(sum, sh);
        float inv = sum > 0f ? 1f / sum : 0f;
        for (int s = Group.IdxX; s < d.T; s += Group.DimX) att[arow + s] *= inv;
        Group.Barrier();
        for (int i = Group.IdxX; i < d.Hd; i += Group.DimX)
        {
            float acc = 0f;
            for (int s = 0; s <= t; s++)
                acc += att[arow + s] * v[((long)b * d.T + s) * C + h * d.Hd + i];
            outp[qo + i] = acc;
        }
    }

    public static void BackwardQueryKernel(ArrayView<float> dq, ArrayView<float> datt, ArrayView<float> dout, ArrayView<float> att,
        ArrayView<float> k, ArrayView<float> v, Dims d)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int rowId = Grid.IdxX;
        int t = rowId % d.T, bh = rowId / d.T, h = bh % d.H, b = bh / d.H;
        int C = d.H * d.Hd;
        long arow = (long)rowId * d.T;
        long to = ((long)b * d.T + t) * C + h * d.Hd;
        float acc = 0f;
        for (int s = Group.IdxX; s <= t; s += Group.DimX)
        {
            long vo = ((long)b * d.T + s) * C + h * d.Hd;
            float dp = 0f;
            for (int i = 0; i < d.Hd; i++) dp += dout[to + i] * v[vo + i];
            datt[arow + s] = dp;
            acc += att[arow + s] * dp;
        }
        acc = GroupReduce.Sum(acc, sh);
        for (int s = Group.IdxX; s < d.T; s += Group.DimX)
            datt[arow + s] = s <= t ? att[arow + s] * (datt[arow + s] - acc) : 0f;
        Group.Barrier();
        for (int i = Group.IdxX; i < d.Hd; i += Group.DimX)
        {
            float g = 0f;
            for (int s = 0; s <= t; s++) g += datt[arow + s] * k[((long)b * d.T + s) * C + h * d.Hd + i];
            dq[to + i] += g * d.Scale;
        }
    }

    public static void BackwardKeyKernel(ArrayView<float> dk, ArrayView<float> dv, ArrayView<float> datt, ArrayView<float> dout,
        ArrayView<float> att, ArrayView<float> q, Dims d)
    {
        int rowId = Grid.IdxX;                 // (b·H + h)·T + s
        int s = rowId % d.T, bh = rowId / d.T, h = bh % d.H, b = bh / d.H;
        int C = d.H * d.Hd;
        long so = ((long)b * d.T + s) * C + h * d.Hd;
        for (int i = Group.IdxX; i < d.Hd; i += Group.DimX)
        {
            float gk = 0f, gv = 0f;
            for (int t = s; t < d.T; t++)
            {
                long a = ((long)bh * d.T + t) * d.T + s;
                long to = ((long)b * d.T + t) * C + h * d.Hd + i;
                gk += datt[a] * q[to];
                gv += att[a] * dout[to];
            }
            dk[so + i] += gk * d.Scale;
            dv[so + i] += gv;
        }
    }

    public sealed class Launcher(Accelerator acc, int group)
    {
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _fwd =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(ForwardKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _bq =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(BackwardQueryKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims> _bk =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Dims>(BackwardKeyKernel);

        static Dims D(int b, int t, int h, int hd) => new() { B = b, T = t, H = h, Hd = hd, Scale = 1f / MathF.Sqrt(hd) };

        public void Forward(ArrayView<float> outp, ArrayView<float> att, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> mask, int b, int t, int h, int hd)
            => _fwd(new KernelConfig(b * h * t, group), outp, att, q, k, v, mask, D(b, t, h, hd));

        public void Backward(ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv, ArrayView<float> datt, ArrayView<float> dout, ArrayView<float> att,
            ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, int b, int t, int h, int hd)
        {
            var d = D(b, t, h, hd);
            _bq(new KernelConfig(b * h * t, group), dq, datt, dout, att, k, v, d);
            _bk(new KernelConfig(b * h * t, group), dk, dv, datt, dout, att, q, d);
        }
    }
}
