using ILGPU;
using ILGPU.Runtime;
using NegDistill.Runtime;

namespace NegDistill.Kernels;

/// <summary>
/// The matmul family: C(M,N) = alpha·op(A)(M,K)·op(B)(K,N) + beta·C with B in F32, F16 or BF16.
/// CPU twin: src/NegDistill.Core/Cpu/Gemm.cs (Gemm.Compute / Gemm.ComputeWide16).
/// Tests: tests/NegDistill.Tests/KernelParityTests.cs; PTX: PtxCompileTests.cs.
///
/// Version 1 (this one): shared-memory tiling. A group of S×S threads owns a 4S×4S tile of C
/// (S = 16 on a GPU: 256 threads, a 64×64 tile; S = 4 on ILGPU's CPU accelerator, whose simulated
/// groups are small); each thread accumulates a 4×4 register block. Per K-step of 16, the group
/// stages a 4S×16 slab of op(A) and a 16×4S slab of op(B) in shared memory, with the load mapping
/// chosen per transpose flag so that neighbouring threads read neighbouring addresses (coalesced).
/// B is widened from 16 bits while it is staged, so frozen F16/BF16 weights are read at half the bytes.
/// Napkin math at S = 16: per K-step 2·64·64·16 flop over (64·16 + 64·16)·4 bytes of global loads
/// = 16 flop/byte — compute-bound on FP32 FMA units (H100: ~60 TFLOP/s FP32 non-tensor), far from
/// tensor-core peak; an mma.sync version is the next step and plugs in at Launcher.Launch.
/// </summary>
public static class MatMulKernels
{
    public const int MaxTile = 64, KStep = 16, Micro = 4;

    public struct Dims
    {
        public int M, N, K, Lda, Ldb, Ldc, TransA, TransB, BKind; // BKind: 0 F32, 1 F16, 2 BF16
        public float Alpha, Beta;
    }

    static float LoadB(ArrayView<float> bf, ArrayView<ushort> bh, int kind, long i)
        => kind == 0 ? bf[i] : Checkpoints.HalfPrecision.Widen(bh[i], kind == 2);

    /// <summary>Grid: (ceil(N/4S), ceil(M/4S)) groups of (S,S) threads.</summary>
    public static void TiledKernel(ArrayView<float> c, ArrayView<float> a, ArrayView<float> bf, ArrayView<ushort> bh, Dims d)
    {
        var As = SharedMemory.Allocate<float>(KStep * MaxTile); // [kk][row]
        var Bs = SharedMemory.Allocate<float>(KStep * MaxTile); // [kk][col]
        int S = Group.DimX, Tile = Micro * S, nthreads = S * S;
        int tx = Group.IdxX, ty = Group.IdxY, lid = ty * S + tx;
        int row0 = Grid.IdxY * Tile, col0 = Grid.IdxX * Tile;

        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;

        for (int k0 = 0; k0 < d.K; k0 += KStep)
        {
            // stage op(A)[row0..+Tile, k0..+16]
            for (int e = lid; e < KStep * Tile; e += nthreads)
            {
                int r, kk;
                if (d.TransA == 0) { r = e / KStep; kk = e % KStep; }   // A row-major (M,K): k contiguous
                else { kk = e / Tile; r = e % Tile; }                  // A stored (K,M): m contiguous
                int gr = row0 + r, gk = k0 + kk;
                float val = 0f;
                if (gr < d.M && gk < d.K)
                    val = d.TransA == 0 ? a[(long)gr * d.Lda + gk] : a[(long)gk * d.Lda + gr];
                As[kk * Tile + r] = val;
            }
            // stage op(B)[k0..+16, col0..+Tile]
            for (int e = lid; e < KStep * Tile; e += nthreads)
            {
                int cc, kk;
                if (d.TransB == 0) { kk = e / Tile; cc = e % Tile; }   // B (K,N): n contiguous
                else { cc = e / KStep; kk = e % KStep; }               // B stored (N,K): k contiguous
                int gc = col0 + cc, gk = k0 + kk;
                float val = 0f;
                if (gc < d.N && gk < d.K)
                    val = LoadB(bf, bh, d.BKind, d.TransB == 0 ? (long)gk * d.Ldb + gc : (long)gc * d.Ldb + gk);
                Bs[kk * Tile + cc] = val;
            }
            Group.Barrier();
            for (int kk = 0; kk < KStep; kk++)
            {
                float a0 = As[kk * Tile + ty * Micro + 0], a1 = As[kk * Tile + ty * Micro + 1];
                float a2 = As[kk * Tile + ty * Micro + 2], a3 = As[kk * Tile + ty * Micro + 3];
                // columns tx, tx+S, tx+2S, tx+3S: conflict-free shared reads across a warp
                float b0 = Bs[kk * Tile + tx], b1 = Bs[kk * Tile + tx + S];
                float b2 = Bs[kk * Tile + tx + 2 * S], b3 = Bs[kk * Tile + tx + 3 * S];
                c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
            }
            Group.Barrier();
        }
        int rb = row0 + ty * Micro;
        Store(c, d, rb + 0, col0 + tx, S, c00, c01, c02, c03);
        Store(c, d, rb + 1, col0 + tx, S, c10, c11, c12, c13);
        Store(c, d, rb + 2, col0 + tx, S, c20, c21, c22, c23);
        Store(c, d, rb + 3, col0 + tx, S, c30, c31, c32, c33);
    }

    static void Store(ArrayView<float> c, Dims d, int r, int col, int s, float v0, float v1, float v2, float v3)
    {
        if (r >= d.M) return;
        Put(c, d, r, col, v0); Put(c, d, r, col + s, v1); Put(c, d, r, col + 2 * s, v2); Put(c, d, r, col + 3 * s, v3);
    }

    static void Put(ArrayView<float> c, Dims d, int r, int col, float v)
    {
        if (col >= d.N) return;
        long i = (long)r * d.Ldc + col;
        c[i] = d.Beta == 0f ? d.Alpha * v : d.Alpha * v + d.Beta * c[i];
    }

    /// <summary>Typed launcher, loaded once per accelerator.</summary>
    /// <param name="side">S: 16 on a GPU, 4 on the CPU accelerator.</param>
    public sealed class Launcher(Accelerator acc, int side)
    {
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, Dims> _tiled =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, Dims>(TiledKernel);

        public void Launch(ArrayView<float> c, ArrayView<float> a, ArrayView<float> bf, ArrayView<ushort> bh, Dims d)
        {
            int tile = Micro * side;
            var grid = new Index2D((d.N + tile - 1) / tile, (d.M + tile - 1) / tile);
            _tiled(new KernelConfig(grid, new Index2D(side, side)), c, a, bf, bh, d);
        }
    }
}
