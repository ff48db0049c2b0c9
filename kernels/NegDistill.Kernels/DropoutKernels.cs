using ILGPU;
using ILGPU.Runtime;
using NegDistill.Ops;

namespace NegDistill.Kernels;

/// <summary>Counter-based inverted dropout. CPU twin: src/NegDistill.Core/Ops/Dropout.cs; both call
/// <see cref="Dropout.MaskScale"/>, so the kernel and the twin drop exactly the same elements.</summary>
public static class DropoutKernels
{
    public static void ForwardKernel(Index1D i, ArrayView<float> y, ArrayView<float> x, float p, ulong seed)
        => y[i] = p <= 0f ? x[i] : x[i] * Dropout.MaskScale(p, seed, i);

    public static void BackwardKernel(Index1D i, ArrayView<float> dx, ArrayView<float> dy, float p, ulong seed)
        => dx[i] += p <= 0f ? dy[i] : dy[i] * Dropout.MaskScale(p, seed, i);

    public sealed class Launcher(Accelerator acc)
    {
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, float, ulong> _fwd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, float, ulong>(ForwardKernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, float, ulong> _bwd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, float, ulong>(BackwardKernel);

        public void Forward(ArrayView<float> y, ArrayView<float> x, float p, ulong seed, long n) => _fwd((int)n, y, x, p, seed);
        public void Backward(ArrayView<float> dx, ArrayView<float> dy, float p, ulong seed, long n) => _bwd((int)n, dx, dy, p, seed);
    }
}
