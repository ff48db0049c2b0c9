using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>RMSNorm forward/backward. CPU twin and the math: src/NegDistill.Core/Ops/RmsNorm.cs.
/// One group per row for the reductions (coalesced strided loops over C); dw is a column-parallel
/// pass over rows so it needs no atomics and sums in a fixed order.</summary>
public static class RmsNormKernels
{
    /// <summary>Grid: N groups. out(N,C), rstd(N), x(N,C), w(C).</summary>
    public static void ForwardKernel(ArrayView<float> outp, ArrayView<float> rstd, ArrayView<float> x, ArrayView<float> w, int c, float eps)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        long row = Grid.IdxX, o = row * c;
        float ss = 0f;
        for (int j = Group.IdxX; j < c; j += Group.DimX) { float v = x[o + j]; ss += v * v; }
        ss = GroupReduce.Sum(ss, sh);
        float r = 1f / MathF.Sqrt(ss / c + eps);
        if (Group.IdxX == 0) rstd[row] = r;
        for (int j = Group.IdxX; j < c; j += Group.DimX) outp[o + j] = x[o + j] * r * w[j];
    }

    /// <summary>Grid: N groups. dx(N,C) +=.</summary>
    public static void BackwardDxKernel(ArrayView<float> dx, ArrayView<float> dout, ArrayView<float> x, ArrayView<float> w, ArrayView<float> rstd, int c)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        long row = Grid.IdxX, o = row * c;
        float gx = 0f;
        for (int j = Group.IdxX; j < c; j += Group.DimX) gx += dout[o + j] * w[j] * x[o + j];
        gx = GroupReduce.Sum(gx, sh);
        float r = rstd[row];
        float coef = r * r * r * gx / c;
        for (int j = Group.IdxX; j < c; j += Group.DimX) dx[o + j] += r * dout[o + j] * w[j] - coef * x[o + j];
    }

    /// <summary>One thread per column j: dw[j] += Σ_rows dout·x·rstd.</summary>
    public static void BackwardDwKernel(Index1D j, ArrayView<float> dw, ArrayView<float> dout, ArrayView<float> x, ArrayView<float> rstd, int n, int c)
    {
        float acc = 0f;
        for (int i = 0; i < n; i++) acc += dout[(long)i * c + j] * x[(long)i * c + j] * rstd[i];
        dw[j] += acc;
    }


    public sealed class Launcher(Accelerator acc, int group)
    {
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> _fwd =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(ForwardKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> _bdx =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(BackwardDxKernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> _bdw =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(BackwardDwKernel);

        public void Forward(ArrayView<float> outp, ArrayView<float> rstd, ArrayView<float> x, ArrayView<float> w, int n, int c, float eps)
            => _fwd(new KernelConfig(n, group), outp, rstd, x, w, c, eps);

        public void Backward(ArrayView<float> dx, ArrayView<float> dw, ArrayView<float> dout, ArrayView<float> x, ArrayView<float> w, ArrayView<float> rstd, int n, int c)
        {
            _bdx(new KernelConfig(n, group), dx, dout, x, w, rstd, c);
            _bdw(c, dw, dout, x, rstd, n, c);
        }
    }
}
