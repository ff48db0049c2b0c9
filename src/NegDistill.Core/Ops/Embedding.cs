using System.Numerics;
namespace NegDistill.Ops;

/// <summary>Token embedding. CPU twin of kernels/NegDistill.Kernels/EmbeddingKernels.cs;
/// tests: tests/NegDistill.Tests/OpGradientTests.cs, KernelParityTests.cs.</summary>
public static class Embedding
{
    /// <param name="outp">(N,C)</param><param name="tokens">(N)</param><param name="wte">(V,C)</param>
    public static void Forward<T>(Span<T> outp, ReadOnlySpan<int> tokens, ReadOnlySpan<T> wte, int n, int c)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int v = wte.Length / c;
        for (int i = 0; i < n; i++)
        {
            int tok = tokens[i];
            if ((uint)tok >= (uint)v) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {tok} at row {i} is outside the vocabulary of {v}");
            wte.Slice(tok * c, c).CopyTo(outp.Slice(i * c, c));
        }
    }

    /// <param name="dwte">(V,C) accumulated</param><param name="dout">(N,C)</param>
    public static void Backward<T>(Span<T> dwte, ReadOnlySpan<int> tokens, ReadOnlySpan<T> dout, int n, int c)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = 0; i < n; i++)
        {
            var row = dwte.Slice(tokens[i] * c, c);
            var d = dout.Slice(i * c, c);
            for (int j = 0; j < c; j++) row[j] += d[j];
        }
    }
}
