using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>RMSNorm forward/backward. CPU twin and the math: src/NegDistill.Core/Ops/RmsNorm.cs.
/// One group per row for the reductions (coalesced strided loops over C): version 1 (ForwardKernel, BackwardDxKernel)
/// through GroupReduce's shared-memory tree, version 2 (ForwardV2Kernel, BackwardDxV2Kernel, the default) by warp
/// shuffles, 2 barriers per row sum instead of 10 at G = 256; version 3 (ForwardV3Kernel, BackwardDxV3Kernel) is
/// version 2 moving four floats per load and store (<see cref="Float4"/>, LDG.E.128) where C is a multiple of 4 and
/// the views are 16-byte aligned (thread j then sums floats 4j … 4j+3, 4(j+G) …: another order of the row sum). dw (only for a trained norm
/// weight; frozen ones skip it) sums in a fixed order without atomics:
///   version 1  BackwardDwKernel: one thread per column over all N rows (C threads: 4,096 at LLaMA-7b,
///              16 groups of 256 on a GPU of 132 SMs, each thread N loads long).
///   version 2  BackwardDwPartsKernel + BackwardDwAddKernel: the twin's two stages — a part per block of
///              <see cref="Ops.RmsNorm.BlockRows"/> rows and column (C·N/32 threads: 524,288 at 16 × 256, each
///              32 loads long, warps reading consecutive columns), then the parts added in block order.</summary>
public static class RmsNormKernels
{
    /// <summary>Grid: N groups. out(N,C), rstd(N), x(N,C), w(C). Version 1: <see cref="GroupReduce"/>'s shared-memory tree.</summary>
    public static void ForwardKernel(ArrayView<float> outp, ArrayView<float> rstd, ArrayView<float> x, ArrayView<float> w, int c, float eps)
        => Forward(outp, rstd, x, w, c, eps, 1);

    /// <summary>Version 2: the same with <see cref="GroupReduce.SumV2"/> (warp shuffles).</summary>
    public static void ForwardV2Kernel(ArrayView<float> outp, ArrayView<float> rstd, ArrayView<float> x, ArrayView<float> w, int c, float eps)
        => Forward(outp, rstd, x, w, c, eps, 2);

    static void Forward(ArrayView<float> outp, ArrayView<float> rstd, ArrayView<float> x, ArrayView<float> w, int c, float eps, int rv)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        long row = Grid.IdxX, o = row * c;
        float ss = 0f;
        for (int j = Group.IdxX; j < c; j += Group.DimX) { float v = x[o + j]; ss += v * v; }
        ss = GroupReduce.Sum(ss, sh, rv);
        float r = 1f / MathF.Sqrt(ss / c + eps);
        if (Group.IdxX == 0) rstd[row] = r;
        for (int j = Group.IdxX; j < c; j += Group.DimX) outp[o + j] = x[o + j] * r * w[j];
    }

    /// <summary>Version 3: version 2 through 128-bit accesses. c4 = C/4; c = C.</summary>
    public static void ForwardV3Kernel(ArrayView<Float4> outp, ArrayView<float> rstd, ArrayView<Float4> x, ArrayView<Float4> w, int c4, int c, float eps)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        long row = Grid.IdxX, o = row * c4;
        float ss = 0f;
        for (int j = Group.IdxX; j < c4; j += Group.DimX) { var v = x[o + j]; ss += (v.X * v.X + v.Y * v.Y) + (v.Z * v.Z + v.W * v.W); }
        ss = GroupReduce.SumV2(ss, sh);
        float r = 1f / MathF.Sqrt(ss / c + eps);
        if (Group.IdxX == 0) rstd[row] = r;
        for (int j = Group.IdxX; j < c4; j += Group.DimX)
        {
            Float4 v = x[o + j], g = w[j];
            outp[o + j] = new Float4(v.X * r * g.X, v.Y * r * g.Y, v.Z * r * g.Z, v.W * r * g.W);
        }
    }

    /// <summary>Grid: N groups. dx(N,C) +=. Version 1: the shared-memory tree.</summary>
    public static void BackwardDxKernel(ArrayView<float> dx, ArrayView<float> dout, ArrayView<float> x, ArrayView<float> w, ArrayView<float> rstd, int c)
        => BackwardDx(dx, dout, x, w, rstd, c, 1);

    /// <summary>Version 2: warp shuffles.</summary>
    public static void BackwardDxV2Kernel(ArrayView<float> dx, ArrayView<float> dout, ArrayView<float> x, ArrayView<float> w, ArrayView<float> rstd, int c)
        => BackwardDx(dx, dout, x, w, rstd, c, 2);

    static void BackwardDx(ArrayView<float> dx, ArrayView<float> dout, ArrayView<float> x, ArrayView<float> w, ArrayView<float> rstd, int c, int rv)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        long row = Grid.IdxX, o = row * c;
        float gx = 0f;
        for (int j = Group.IdxX; j < c; j += Group.DimX) gx += dout[o + j] * w[j] * x[o + j];
        gx = GroupReduce.Sum(gx, sh, rv);
        float r = rstd[row];
        float coef = r * r * r * gx / c;
        for (int j = Group.IdxX; j < c; j += Group.DimX) dx[o + j] += r * dout[o + j] * w[j] - coef * x[o + j];
    }

    /// <summary>Version 3: version 2 through 128-bit accesses. c4 = C/4; c = C.</summary>
    public static void BackwardDxV3Kernel(ArrayView<Float4> dx, ArrayView<Float4> dout, ArrayView<Float4> x, ArrayView<Float4> w, ArrayView<float> rstd, int c4, int c)
    {
        var sh = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        long row = Grid.IdxX, o = row * c4;
        float gx = 0f;
        for (int j = Group.IdxX; j < c4; j += Group.DimX)
        {
            Float4 d = dout[o + j], g = w[j], v = x[o + j];
            gx += (d.X * g.X * v.X + d.Y * g.Y * v.Y) + (d.Z * g.Z * v.Z + d.W * g.W * v.W);
        }
        gx = GroupReduce.SumV2(gx, sh);
        float r = rstd[row];
        float coef = r * r * r * gx / c;
        for (int j = Group.IdxX; j < c4; j += Group.DimX)
        {
            Float4 a = dx[o + j], d = dout[o + j], g = w[j], v = x[o + j];
            dx[o + j] = new Float4(a.X + (r * d.X * g.X - coef * v.X), a.Y + (r * d.Y * g.Y - coef * v.Y),
                                   a.Z + (r * d.Z * g.Z - coef * v.Z), a.W + (r * d.W * g.W - coef * v.W));
        }
    }

    /// <summary>One thread per column j: dw[j] += Σ_rows dout·x·rstd.</summary>
    public static void BackwardDwKernel(Index1D j, ArrayView<float> dw, ArrayView<float> dout, ArrayView<float> x, ArrayView<float> rstd, int n, int c)
    {
        float acc = 0f;
        for (int i = 0; i < n; i++) acc += dout[(long)i * c + j] * x[(long)i * c + j] * rstd[i];
        dw[j] += acc;
    }


    /// <summary>Version 2, stage 1. Grid: (C, blocks). parts[b, j] = Σ over rows [32b, 32b + 32) ∩ [0, N), in order, of dout·x·rstd.</summary>
    public static void BackwardDwPartsKernel(Index2D i, ArrayView<float> parts, ArrayView<float> dout, ArrayView<float> x, ArrayView<float> rstd, int n, int c)
    {
        int j = i.X, b = i.Y, lo = b * Ops.RmsNorm.BlockRows, hi = Math.Min(n, lo + Ops.RmsNorm.BlockRows);
        float acc = 0f;
        for (int r = lo; r < hi; r++) acc += dout[(long)r * c + j] * x[(long)r * c + j] * rstd[r];
        parts[(long)b * c + j] = acc;
    }

    /// <summary>Version 2, stage 2. One thread per column: dw[j] += parts[0, j] + parts[1, j] + … in block order.</summary>
    public static void BackwardDwAddKernel(Index1D j, ArrayView<float> dw, ArrayView<float> parts, int blocks, int c)
    {
        float acc = dw[j];
        for (int b = 0; b < blocks; b++) acc += parts[(long)b * c + j];
        dw[j] = acc;
    }

    public enum DwVersion { V1Columns = 1, V2Blocks = 2 }

    public sealed class Launcher(Accelerator acc, int group)
    {
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> _fwd =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(ForwardKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> _fwd2 =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(ForwardV2Kernel);
        readonly Action<KernelConfig, ArrayView<Float4>, ArrayView<float>, ArrayView<Float4>, ArrayView<Float4>, int, int, float> _fwd3 =
            acc.LoadStreamKernel<ArrayView<Float4>, ArrayView<float>, ArrayView<Float4>, ArrayView<Float4>, int, int, float>(ForwardV3Kernel);
        readonly Action<KernelConfig, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, int, int> _bdx3 =
            acc.LoadStreamKernel<ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, int, int>(BackwardDxV3Kernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> _bdx =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(BackwardDxKernel);
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> _bdx2 =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(BackwardDxV2Kernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> _bdw =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(BackwardDwKernel);

        /// <summary>Version 3 when <paramref name="rv"/> is 2, <paramref name="sv"/> is 2 and the rows fit 128-bit
        /// accesses (C a multiple of 4, aligned views); else version <paramref name="rv"/>.</summary>
        public void Forward(ArrayView<float> outp, ArrayView<float> rstd, ArrayView<float> x, ArrayView<float> w, int n, int c, float eps,
            GroupReduce.Version rv = GroupReduce.Version.V2Warp, Wide.Version sv = Wide.Version.V2Float4)
        {
            long nc = (long)n * c;
            if (rv == GroupReduce.Version.V2Warp && sv == Wide.Version.V2Float4 && (c & 3) == 0 && Wide.Fits(nc, outp, x) && Wide.Fits(c, w))
                _fwd3(new KernelConfig(n, group), Wide.As4(outp, nc), rstd, Wide.As4(x, nc), Wide.As4(w, c), c / 4, c, eps);
            else (rv == GroupReduce.Version.V1Tree ? _fwd : _fwd2)(new KernelConfig(n, group), outp, rstd, x, w, c, eps);
        }

        readonly Action<Index2D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> _bdwParts =
            acc.LoadAutoGroupedStreamKernel<Index2D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(BackwardDwPartsKernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, int> _bdwAdd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int>(BackwardDwAddKernel);
        MemoryBuffer1D<float, Stride1D.Dense>? _parts;

        /// <param name="dw">(C) +=; not valid (default): the weight is frozen, no dw pass runs</param>
        public void Backward(ArrayView<float> dx, ArrayView<float> dw, ArrayView<float> dout, ArrayView<float> x, ArrayView<float> w, ArrayView<float> rstd, int n, int c,
            DwVersion version = DwVersion.V2Blocks, GroupReduce.Version rv = GroupReduce.Version.V2Warp, Wide.Version sv = Wide.Version.V2Float4)
        {
            long nc = (long)n * c;
            if (rv == GroupReduce.Version.V2Warp && sv == Wide.Version.V2Float4 && (c & 3) == 0 && Wide.Fits(nc, dx, dout, x) && Wide.Fits(c, w))
                _bdx3(new KernelConfig(n, group), Wide.As4(dx, nc), Wide.As4(dout, nc), Wide.As4(x, nc), Wide.As4(w, c), rstd, c / 4, c);
            else (rv == GroupReduce.Version.V1Tree ? _bdx : _bdx2)(new KernelConfig(n, group), dx, dout, x, w, rstd, c);
            if (!dw.IsValid) return;
            if (version == DwVersion.V1Columns) { _bdw(c, dw, dout, x, rstd, n, c); return; }
            int blocks = (n + Ops.RmsNorm.BlockRows - 1) / Ops.RmsNorm.BlockRows;
            long need = (long)blocks * c;
            if (_parts == null || _parts.Length < need)
            {
                acc.Synchronize();                             // a launch in flight may still read the old scratch
                _parts?.Dispose();
                _parts = acc.Allocate1D<float>(need);
            }
            _bdwParts(new Index2D(c, blocks), _parts.View, dout, x, rstd, n, c);
            _bdwAdd(c, dw, _parts.View, blocks, c);
        }
    }
}
