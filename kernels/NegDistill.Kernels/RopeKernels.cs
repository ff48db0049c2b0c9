using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>Rotate-half RoPE, in place. CPU twin and the math: src/NegDistill.Core/Ops/Rope.cs.
/// One thread per (row, head, pair); the inverse frequencies come from the same fp32 table the
/// CPU twin uses (<see cref="NegDistill.Ops.Rope.InvFreq"/>), uploaded once.</summary>
public static class RopeKernels
{
    public static void Kernel(Index1D idx, ArrayView<float> x, ArrayView<int> pos, ArrayView<float> invFreq, int nHeads, int headDim, float sign)
    {
        int half = headDim / 2;
        long r = idx / (nHeads * half);
        int rem = (int)(idx % (nHeads * half));
        int h = rem / half, i = rem % half;
        float ang = pos[r] * invFreq[i];
        float cs = MathF.Cos(ang), sn = sign * MathF.Sin(ang);
        long o = r * nHeads * headDim + h * headDim + i;
        float x1 = x[o], x2 = x[o + half];
        x[o] = x1 * cs - x2 * sn;
        x[o + half] = x2 * cs + x1 * sn;
    }

    public sealed class Launcher(Accelerator acc)
    {
        readonly Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, float> _k =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, float>(Kernel);

        public void Apply(ArrayView<float> x, ArrayView<int> pos, ArrayView<float> invFreq, int n, int nHeads, int headDim, bool inverse)
            => _k(n * nHeads * (headDim / 2), x, pos, invFreq, nHeads, headDim, inverse ? -1f : 1f);
    }
}
