using ILGPU;
using ILGPU.Runtime;
using NegDistill.Ops;

namespace NegDistill.Kernels;

/// <summary>Counter-based inverted dropout. CPU twin: src/NegDistill.Core/Ops/Dropout.cs; both call
/// <see cref="Dropout.MaskScale"/>, so the kernel and the twin drop exactly the same elements. Version 2 (*V2Kernel:
/// four floats per thread, 128-bit loads and stores, element 4i + k hashed by its own index) where <see cref="Wide.Fits"/>
/// holds; same bits as version 1.</summary>
public static class DropoutKernels
{
    public static void ForwardKernel(Index1D i, ArrayView<float> y, ArrayView<float> x, float p, ulong seed)
        => y[i] = p <= 0f ? x[i] : x[i] * Dropout.MaskScale(p, seed, i);

    public static void BackwardKernel(Index1D i, ArrayView<float> dx, ArrayView<float> dy, float p, ulong seed)
        => dx[i] += p <= 0f ? dy[i] : dy[i] * Dropout.MaskScale(p, seed, i);

    public static void ForwardV2Kernel(Index1D i, ArrayView<Float4> y, ArrayView<Float4> x, float p, ulong seed)
    {
        Float4 v = x[i];
        if (p > 0f)
        {
            long e = 4L * i;
            v = new Float4(v.X * Dropout.MaskScale(p, seed, e), v.Y * Dropout.MaskScale(p, seed, e + 1),
                v.Z * Dropout.MaskScale(p, seed, e + 2), v.W * Dropout.MaskScale(p, seed, e + 3));
        }
        y[i] = v;
    }

    public static void BackwardV2Kernel(Index1D i, ArrayView<Float4> dx, ArrayView<Float4> dy, float p, ulong seed)
    {
        Float4 g = dy[i], d = dx[i];
        if (p > 0f)
        {
            long e = 4L * i;
            g = new Float4(g.X * Dropout.MaskScale(p, seed, e), g.Y * Dropout.MaskScale(p, seed, e + 1),
                g.Z * Dropout.MaskScale(p, seed, e + 2), g.W * Dropout.MaskScale(p, seed, e + 3));
        }
        dx[i] = new Float4(d.X + g.X, d.Y + g.Y, d.Z + g.Z, d.W + g.W);
    }

    public sealed class Launcher(Accelerator acc)
    {
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, float, ulong> _fwd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, float, ulong>(ForwardKernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, float, ulong> _bwd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, float, ulong>(BackwardKernel);

        readonly Action<Index1D, ArrayView<Float4>, ArrayView<Float4>, float, ulong> _fwd2 =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, ArrayView<Float4>, float, ulong>(ForwardV2Kernel);
        readonly Action<Index1D, ArrayView<Float4>, ArrayView<Float4>, float, ulong> _bwd2 =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, ArrayView<Float4>, float, ulong>(BackwardV2Kernel);

        public void Forward(ArrayView<float> y, ArrayView<float> x, float p, ulong seed, long n, Wide.Version version = Wide.Version.V2Float4)
        {
            if (version == Wide.Version.V2Float4 && Wide.Fits(n, y, x)) _fwd2((int)(n / 4), Wide.As4(y, n), Wide.As4(x, n), p, seed);
            else _fwd((int)n, y, x, p, seed);
        }

        public void Backward(ArrayView<float> dx, ArrayView<float> dy, float p, ulong seed, long n, Wide.Version version = Wide.Version.V2Float4)
        {
            if (version == Wide.Version.V2Float4 && Wide.Fits(n, dx, dy)) _bwd2((int)(n / 4), Wide.As4(dx, n), Wide.As4(dy, n), p, seed);
            else _bwd((int)n, dx, dy, p, seed);
        }
    }
}
