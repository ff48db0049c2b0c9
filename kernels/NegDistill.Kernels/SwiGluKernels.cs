using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>SwiGLU gate, elementwise. CPU twin and the math: src/NegDistill.Core/Ops/SwiGlu.cs.</summary>
public static class SwiGluKernels
{
    public static void ForwardKernel(Index1D i, ArrayView<float> h, ArrayView<float> g, ArrayView<float> u)
    {
        float gi = g[i];
        h[i] = gi / (1f + MathF.Exp(-gi)) * u[i];
    }

    public static void BackwardKernel(Index1D i, ArrayView<float> dg, ArrayView<float> du, ArrayView<float> dh, ArrayView<float> g, ArrayView<float> u)
    {
        float gi = g[i], s = 1f / (1f + MathF.Exp(-gi));
        du[i] += dh[i] * gi * s;
        dg[i] += dh[i] * u[i] * s * (1f + gi * (1f - s));
    }

    public sealed class Launcher(Accelerator acc)
    {
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>> _fwd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(ForwardKernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> _bwd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(BackwardKernel);

        public void Forward(ArrayView<float> h, ArrayView<float> g, ArrayView<float> u, long n) => _fwd((int)n, h, g, u);
        public void Backward(ArrayView<float> dg, ArrayView<float> du, ArrayView<float> dh, ArrayView<float> g, ArrayView<float> u, long n) => _bwd((int)n, dg, du, dh, g, u);
    }
}
