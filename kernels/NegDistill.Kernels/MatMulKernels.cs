using ILGPU;
using ILGPU.Runtime;
using NegDistill.Runtime;

namespace NegDistill.Kernels;

/// <summary>
/// The matmul family: C(M,N) = alpha·op(A)(M,K)·op(B)(K,N) + beta·C with B in F32, F16 or BF16.
/// CPU twin: src/NegDistill.Core/Cpu/Gemm.cs (Gemm.Compute / Gemm.ComputeWide16).
/// Tests: tests/NegDistill.Tests/KernelParityTests.cs (v1 against the twin), MmaEmulatorTests.cs (v2's
/// fragment and tiling arithmetic against a warp emulator), PtxasTests.cs (v2's SASS holds HMMA, LDSM,
/// LDGSTS and no local memory); on a GPU, `negdistill gpu-check` checks and times every version.
/// The versions, numbered as llm.c's dev/cuda numbers them, stay side by side:
///   v1 TiledKernel   SIMT fp32 shared-memory tiles (any shape, any device, the CPU accelerator too)
///   v2 MmaKernel     tensor cores: mma.sync m16n8k16 BF16/F16 → F32, ldmatrix, cp.async double buffer
///   library          cuBLASLt (CuBlasLt.cs), the default on CUDA when the library is found
///
/// Version 1: shared-memory tiling. A group of S×S threads owns a 4S×4S tile of C
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

    // ------------------------------------------------------------------------------------------
    // Version 2: tensor cores (MmaTiling, MmaFragments, MmaPtx in Mma.cs).
    //
    // Both operands are 16-bit (A is cast from F32 by CastKernel first; B is the frozen weight), so
    // every tile moves global → shared by cp.async in 16-byte chunks, two stages deep: the copy of
    // k-tile t+1 is in flight while tile t is multiplied. Fragments come out of shared memory by
    // ldmatrix.x4 (with .trans where the tile is stored outer-major) and go into mma.sync.m16n8k16.
    // Per group: 128×128 of C, 8 warps × (4×4 tiles of 16×8), 64 FP32 accumulators per thread.
    // Napkin math: per 32-deep k-tile 2·128·128·32 = 1.05 MFLOP over 16 KB of global loads: 64 FLOP/byte,
    // compute-bound on H100/H200 tensor cores (989 dense BF16 TFLOP/s, mma.sync reaches about 2/3 of
    // that; wgmma, which ILGPU cannot reach, the rest).
    // Preconditions (the launcher falls back to v1 otherwise): K % 8 == 0 for k-major operands,
    // M % 8 (transA) / N % 8 (!transB) for outer-major ones, 16-byte aligned operand addresses.
    // ------------------------------------------------------------------------------------------

    public struct MmaDims
    {
        public int M, N, K, Lda, Ldb, Ldc, TransA, TransB, F16;
        public float Alpha, Beta;
        /// <summary>Device addresses of the 16-bit A and B and of the F32 C (ILGPU cannot take a view's address
        /// in a kernel, and the epilogue writes C from inline PTX).</summary>
        public ulong A, B, C;
    }

    /// <summary>Grid: (ceil(N/128), ceil(M/128)) groups of 256 threads, MmaTiling.SharedBytes of dynamic
    /// shared memory.</summary>
    public static void MmaKernel(ArrayView<float> c, MmaDims d)
    {
        // c is not touched here: C is written by the epilogue strings through d.C (its device address);
        // the view keeps the launch signature of the family
        var keep = SharedMemory.GetDynamic<uint>();
        if (d.M < 0) keep[0] = 0u;   // ILGPU declares the dynamic shared array only for a kernel that touches it
        MmaPtx.Declare();            // accumulators and fragments in named PTX registers (tools/gen-mma-ptx.py)
        int tid = Group.IdxX, warp = tid >> 5, lane = tid & 31;
        int m0 = Grid.IdxY * MmaTiling.BM, n0 = Grid.IdxX * MmaTiling.BN;
        bool aK = d.TransA == 0, bK = d.TransB != 0, f16 = d.F16 != 0;
        int sa = MmaTiling.Stride(aK, MmaTiling.BM), sb = MmaTiling.Stride(bK, MmaTiling.BN);
        uint aBytes = (uint)(2 * MmaTiling.TileElements(aK, MmaTiling.BM));
        uint stageBytes = aBytes + (uint)(2 * MmaTiling.TileElements(bK, MmaTiling.BN));
        const uint smem = 0;         // byte offsets from the (aligned) dynamic shared base; the strings add the base
        int wr = MmaTiling.WarpRow(warp), wc = MmaTiling.WarpCol(warp);
        int tiles = (d.K + MmaTiling.BK - 1) / MmaTiling.BK;

        MmaStage(d, smem, aBytes, 0, tid, m0, n0, aK, bK);
        MmaPtx.CommitGroup();
        for (int t = 0; t < tiles; t++)
        {
            uint cur = smem + (uint)(t & 1) * stageBytes;
            if (t + 1 < tiles)
            {
                MmaStage(d, smem + (uint)((t + 1) & 1) * stageBytes, aBytes, (t + 1) * MmaTiling.BK, tid, m0, n0, aK, bK);
                MmaPtx.CommitGroup();
                MmaPtx.WaitGroup1();           // this thread's copies of tile t are done, t + 1 may be in flight
            }
            else MmaPtx.WaitGroup0();
            Group.Barrier();                   // and every other thread's
            uint bBase = cur + aBytes;
            for (int kk = 0; kk < MmaTiling.BK; kk += 16)
            {
                uint x0 = cur + 2u * (uint)MmaFragments.LdsmA(lane, aK, sa, wr, kk), x1 = cur + 2u * (uint)MmaFragments.LdsmA(lane, aK, sa, wr + 16, kk);
                uint x2 = cur + 2u * (uint)MmaFragments.LdsmA(lane, aK, sa, wr + 32, kk), x3 = cur + 2u * (uint)MmaFragments.LdsmA(lane, aK, sa, wr + 48, kk);
                uint y0 = bBase + 2u * (uint)MmaFragments.LdsmB(lane, bK, sb, wc, kk), y1 = bBase + 2u * (uint)MmaFragments.LdsmB(lane, bK, sb, wc + 16, kk);
                if (aK) MmaPtx.LoadA(x0, x1, x2, x3); else MmaPtx.LoadATrans(x0, x1, x2, x3);
                if (bK) MmaPtx.LoadB(y0, y1); else MmaPtx.LoadBTrans(y0, y1);
                if (f16) MmaPtx.Mma16F16(); else MmaPtx.Mma16Bf16();
            }
            Group.Barrier();                   // tile t's stage is refilled in iteration t + 1
        }
        // epilogue: lane holds rows g and g + 8, columns 2t, 2t + 1 of each 16×8 tile (MmaFragments.CRow/CCol)
        int r = m0 + wr + MmaFragments.CRow(lane, 0), q = n0 + wc + MmaFragments.CCol(lane, 0);
        float al = d.Alpha, be = d.Beta;
        MmaPtx.Store00Lo(Ca(d, r, q), Cols(d, r, q), al, be); MmaPtx.Store00Hi(Ca(d, r + 8, q), Cols(d, r + 8, q), al, be);
        MmaPtx.Store01Lo(Ca(d, r, q + 8), Cols(d, r, q + 8), al, be); MmaPtx.Store01Hi(Ca(d, r + 8, q + 8), Cols(d, r + 8, q + 8), al, be);
        MmaPtx.Store02Lo(Ca(d, r, q + 16), Cols(d, r, q + 16), al, be); MmaPtx.Store02Hi(Ca(d, r + 8, q + 16), Cols(d, r + 8, q + 16), al, be);
        MmaPtx.Store03Lo(Ca(d, r, q + 24), Cols(d, r, q + 24), al, be); MmaPtx.Store03Hi(Ca(d, r + 8, q + 24), Cols(d, r + 8, q + 24), al, be);
        MmaPtx.Store10Lo(Ca(d, r + 16, q), Cols(d, r + 16, q), al, be); MmaPtx.Store10Hi(Ca(d, r + 24, q), Cols(d, r + 24, q), al, be);
        MmaPtx.Store11Lo(Ca(d, r + 16, q + 8), Cols(d, r + 16, q + 8), al, be); MmaPtx.Store11Hi(Ca(d, r + 24, q + 8), Cols(d, r + 24, q + 8), al, be);
        MmaPtx.Store12Lo(Ca(d, r + 16, q + 16), Cols(d, r + 16, q + 16), al, be); MmaPtx.Store12Hi(Ca(d, r + 24, q + 16), Cols(d, r + 24, q + 16), al, be);
        MmaPtx.Store13Lo(Ca(d, r + 16, q + 24), Cols(d, r + 16, q + 24), al, be); MmaPtx.Store13Hi(Ca(d, r + 24, q + 24), Cols(d, r + 24, q + 24), al, be);
        MmaPtx.Store20Lo(Ca(d, r + 32, q), Cols(d, r + 32, q), al, be); MmaPtx.Store20Hi(Ca(d, r + 40, q), Cols(d, r + 40, q), al, be);
        MmaPtx.Store21Lo(Ca(d, r + 32, q + 8), Cols(d, r + 32, q + 8), al, be); MmaPtx.Store21Hi(Ca(d, r + 40, q + 8), Cols(d, r + 40, q + 8), al, be);
        MmaPtx.Store22Lo(Ca(d, r + 32, q + 16), Cols(d, r + 32, q + 16), al, be); MmaPtx.Store22Hi(Ca(d, r + 40, q + 16), Cols(d, r + 40, q + 16), al, be);
        MmaPtx.Store23Lo(Ca(d, r + 32, q + 24), Cols(d, r + 32, q + 24), al, be); MmaPtx.Store23Hi(Ca(d, r + 40, q + 24), Cols(d, r + 40, q + 24), al, be);
        MmaPtx.Store30Lo(Ca(d, r + 48, q), Cols(d, r + 48, q), al, be); MmaPtx.Store30Hi(Ca(d, r + 56, q), Cols(d, r + 56, q), al, be);
        MmaPtx.Store31Lo(Ca(d, r + 48, q + 8), Cols(d, r + 48, q + 8), al, be); MmaPtx.Store31Hi(Ca(d, r + 56, q + 8), Cols(d, r + 56, q + 8), al, be);
        MmaPtx.Store32Lo(Ca(d, r + 48, q + 16), Cols(d, r + 48, q + 16), al, be); MmaPtx.Store32Hi(Ca(d, r + 56, q + 16), Cols(d, r + 56, q + 16), al, be);
        MmaPtx.Store33Lo(Ca(d, r + 48, q + 24), Cols(d, r + 48, q + 24), al, be); MmaPtx.Store33Hi(Ca(d, r + 56, q + 24), Cols(d, r + 56, q + 24), al, be);
    }

    /// <summary>Device address of C[r, q] (clamped to C's first element when outside, where nothing is stored).</summary>
    static ulong Ca(MmaDims d, int r, int q) => r < d.M && q < d.N ? d.C + 4ul * (ulong)((long)r * d.Ldc + q) : d.C;
    /// <summary>How many of the columns q, q + 1 of row r lie inside C.</summary>
    static uint Cols(MmaDims d, int r, int q) => r >= d.M || q >= d.N ? 0u : q + 1 < d.N ? 2u : 1u;

    /// <summary>Issues the cp.async copies of k-tile k0 (A at m0, B at n0) into the stage at <paramref name="stage"/>.</summary>
    static void MmaStage(MmaDims d, uint stage, uint aBytes, int k0, int tid, int m0, int n0, bool aK, bool bK)
    {
        for (int i = 0; i < MmaTiling.ChunksPerTile / MmaTiling.Threads; i++)
        {
            int ch = tid + i * MmaTiling.Threads;
            bool inA = MmaTiling.ChunkInside(aK, m0, k0, ch, d.M, d.K);
            long ga = inA ? MmaTiling.ChunkGlobal(aK, m0, k0, ch, d.Lda) : 0;
            MmaPtx.CpAsync16(stage + 2u * (uint)MmaTiling.ChunkSmem(aK, MmaTiling.BM, ch), d.A + 2ul * (ulong)ga, inA ? 16u : 0u);
            bool inB = MmaTiling.ChunkInside(bK, n0, k0, ch, d.N, d.K);
            long gb = inB ? MmaTiling.ChunkGlobal(bK, n0, k0, ch, d.Ldb) : 0;
            MmaPtx.CpAsync16(stage + aBytes + 2u * (uint)MmaTiling.ChunkSmem(bK, MmaTiling.BN, ch), d.B + 2ul * (ulong)gb, inB ? 16u : 0u);
        }
    }

    /// <summary>dst[i] ← src[i] narrowed to BF16 (or F16): activations entering the 16-bit GEMMs.</summary>
    public static void CastKernel(Index1D i, ArrayView<float> src, ArrayView<ushort> dst, int bf16) => dst[i] = Checkpoints.HalfPrecision.Narrow(src[i], bf16 != 0);

    /// <summary>Which matmul code runs: <see cref="Auto"/> picks the library where loaded, else version 2
    /// where its preconditions hold, else version 1.</summary>
    public enum Version { Auto, V1Simt, V2Mma, Library }

    /// <summary>Typed launcher, loaded once per accelerator.</summary>
    /// <param name="side">S: 16 on a GPU, 4 on the CPU accelerator.</param>
    public sealed class Launcher(Accelerator acc, int side)
    {
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, Dims> _tiled =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, Dims>(TiledKernel);
        // inline PTX compiles for CUDA only; on the CPU accelerator version 2 is never loaded
        readonly Action<KernelConfig, ArrayView<float>, MmaDims>? _mma =
            acc.AcceleratorType == AcceleratorType.Cuda ? acc.LoadStreamKernel<ArrayView<float>, MmaDims>(MmaKernel) : null;
        readonly Action<Index1D, ArrayView<float>, ArrayView<ushort>, int> _cast =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<ushort>, int>(CastKernel);

        public bool HasTensorCores => _mma != null;

        public void Launch(ArrayView<float> c, ArrayView<float> a, ArrayView<float> bf, ArrayView<ushort> bh, Dims d)
        {
            int tile = Micro * side;
            var grid = new Index2D((d.N + tile - 1) / tile, (d.M + tile - 1) / tile);
            _tiled(new KernelConfig(grid, new Index2D(side, side)), c, a, bf, bh, d);
        }

        public void Cast(ArrayView<float> src, ArrayView<ushort> dst, long n, bool bf16) => _cast((int)n, src, dst, bf16 ? 1 : 0);

        /// <summary>Whether version 2 can run these operands: shapes whose 16-byte chunks are wholly in or
        /// out of the matrix, and 16-byte aligned device addresses.</summary>
        public static bool MmaFits(Dims d, ulong a16, ulong b16) =>
            (d.TransA == 0 ? d.K % 8 == 0 && d.Lda % 8 == 0 : d.M % 8 == 0 && d.Lda % 8 == 0) &&
            (d.TransB != 0 ? d.K % 8 == 0 && d.Ldb % 8 == 0 : d.N % 8 == 0 && d.Ldb % 8 == 0) &&
            a16 % 16 == 0 && b16 % 16 == 0;

        /// <summary>Version 2 on 16-bit A and B at device addresses <paramref name="a16"/>, <paramref name="b16"/>;
        /// C is the F32 view <paramref name="c"/>.</summary>
        public void LaunchMma(ArrayView<float> c, ulong a16, ulong b16, Dims d, bool f16)
        {
            if (_mma == null) throw new NotSupportedException("matmul version 2 (mma.sync) needs a CUDA accelerator; the CPU accelerator skips inline PTX");
            var md = new MmaDims
            {
                M = d.M, N = d.N, K = d.K, Lda = d.Lda, Ldb = d.Ldb, Ldc = d.Ldc, TransA = d.TransA, TransB = d.TransB, F16 = f16 ? 1 : 0,
                Alpha = d.Alpha, Beta = d.Beta, A = a16, B = b16, C = (ulong)c.LoadEffectiveAddressAsPtr().ToInt64(),
            };
            var grid = new Index2D((d.N + MmaTiling.BN - 1) / MmaTiling.BN, (d.M + MmaTiling.BM - 1) / MmaTiling.BM);
            int bytes = MmaTiling.SharedBytes(d.TransA == 0, d.TransB != 0);
            _mma(new KernelConfig(grid, new Index2D(MmaTiling.Threads, 1), SharedMemoryConfig.RequestDynamic<byte>(bytes)), c, md);
        }
    }
}
