using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>Token embedding. CPU twin: src/NegDistill.Core/Ops/Embedding.cs.
/// The backward runs one thread per channel over all rows in order: deterministic, no atomics
/// (it only runs when the embedding itself is trained, i.e. full fine-tuning of small bases).</summary>
public static class EmbeddingKernels
{
    /// <summary>One thread per output element of out(N,C).</summary>
    public static void ForwardKernel(Index1D i, ArrayView<float> outp, ArrayView<int> tokens, ArrayView<float> wte, int c)
    {
        long row = i / c; int j = (int)(i % c);
        outp[i] = wte[(long)tokens[row] * c + j];
    }

    public static void BackwardKernel(Index1D j, ArrayView<float> dwte, ArrayView<int> tokens, ArrayView<float> dout, int n, int c)
    {
        for (int r = 0; r < n; r++) dwte[(long)tokens[r] * c + j] += dout[(long)r * c + j];
    }

    public sealed class Launcher(Accelerator acc)
    {
        readonly Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int> _fwd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>(ForwardKernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> _bwd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(BackwardKernel);

        public void Forward(ArrayView<float> outp, ArrayView<int> tokens, ArrayView<float> wte, int n, int c) => _fwd(n * c, outp, tokens, wte, c);
        public void Backward(ArrayView<float> dwte, ArrayView<int> tokens, ArrayView<float> dout, int n, int c) => _bwd(c, dwte, tokens, dout, n, c);
    }
}
