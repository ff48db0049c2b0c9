using System.Runtime.CompilerServices;
using ILGPU.Runtime.Cuda;

namespace NegDistill.Kernels;

/// <summary>
/// Which lane of a warp holds which element of the operands of
/// <c>mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32</c> (and its .f16 twin), and what
/// <c>ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16</c> hands each lane — as plain index functions
/// (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type" and "ldmatrix"). With
/// g = lane / 4 (the group) and t = lane % 4 (the thread in the group):
///   A (16×16, row):  a0 = A[g][2t, 2t+1]     a1 = A[g+8][2t, 2t+1]   a2 = A[g][2t+8, +9]   a3 = A[g+8][2t+8, +9]
///   B (16×8, col):   b0 = B[2t, 2t+1][g]     b1 = B[2t+8, 2t+9][g]
///   C, D (16×8 f32): c0, c1 = C[g][2t, 2t+1]  c2, c3 = C[g+8][2t, 2t+1]
/// Each 32-bit register holds two 16-bit values, the lower-indexed one in the low half.
/// The MmaKernel (MatMulKernels version 2) composes exactly these functions; the tests check them
/// against a warp emulator written from the ISA's diagrams (tests/NegDistill.Tests/MmaEmulatorTests.cs).
/// </summary>
public static class MmaFragments
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static int G(int lane) => lane >> 2;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static int T(int lane) => lane & 3;

    /// <summary>Row of A held in register r (0..3) of <paramref name="lane"/>.</summary>
    public static int ARow(int lane, int r) => G(lane) + ((r & 1) << 3);
    /// <summary>Column (k) of A in half h (0 low, 1 high) of register r.</summary>
    public static int ACol(int lane, int r, int h) => (T(lane) << 1) + h + ((r >> 1) << 3);
    /// <summary>Row (k) of B in half h of register r (0..1).</summary>
    public static int BRow(int lane, int r, int h) => (T(lane) << 1) + h + (r << 3);
    /// <summary>Column (n) of B held by <paramref name="lane"/>.</summary>
    public static int BCol(int lane) => G(lane);
    /// <summary>Row of C/D element e (0..3) of <paramref name="lane"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static int CRow(int lane, int e) => G(lane) + ((e >> 1) << 3);
    /// <summary>Column of C/D element e.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static int CCol(int lane, int e) => (T(lane) << 1) + (e & 1);

    // ldmatrix.x4: lanes 8i .. 8i+7 give the addresses of rows 0..7 of matrix i; matrix i lands in
    // destination register i of every lane.
    public static int LdsmMatrix(int lane) => lane >> 3;
    public static int LdsmRow(int lane) => lane & 7;

    /// <summary>Row, within an 8×8 matrix as addressed, of the element that half h of a destination
    /// register of <paramref name="lane"/> receives: row lane/4 (columns 2(lane%4) + h); with .trans the
    /// matrix is read column-wise: row 2(lane%4) + h (column lane/4).</summary>
    public static int LdsmSrcRow(int lane, bool trans, int h) => trans ? ((lane & 3) << 1) + h : lane >> 2;
    public static int LdsmSrcCol(int lane, bool trans, int h) => trans ? lane >> 2 : ((lane & 3) << 1) + h;

    /// <summary>
    /// The shared-memory element offset whose address <paramref name="lane"/> passes to the ldmatrix.x4
    /// that loads the A fragment (a0..a3) of the 16×16 block at (m0, k0). kMajor: the tile is stored
    /// [m][k] (row stride <paramref name="stride"/>), loaded as is; else stored [k][m], loaded with .trans.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int LdsmA(int lane, bool kMajor, int stride, int m0, int k0)
    {
        int i = lane >> 3, j = lane & 7;
        return kMajor ? (m0 + j + ((i & 1) << 3)) * stride + k0 + ((i >> 1) << 3)
                      : (k0 + j + ((i >> 1) << 3)) * stride + m0 + ((i & 1) << 3);
    }

    /// <summary>
    /// The shared-memory element offset <paramref name="lane"/> passes to the ldmatrix.x4 that loads the
    /// B fragments of two n8 tiles at n0 and n0 + 8, k block k0: registers 0, 1 = b0, b1 of the tile at
    /// n0; 2, 3 = b0, b1 of the tile at n0 + 8. kMajor: stored [n][k], loaded as is; else stored [k][n],
    /// loaded with .trans.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int LdsmB(int lane, bool kMajor, int stride, int n0, int k0)
    {
        int i = lane >> 3, j = lane & 7;
        return kMajor ? (n0 + j + ((i >> 1) << 3)) * stride + k0 + ((i & 1) << 3)
                      : (k0 + j + ((i & 1) << 3)) * stride + n0 + ((i >> 1) << 3);
    }
}

/// <summary>
/// The block tiling of MatMulKernels version 2: a 128×128 tile of C per group of 256 threads (8 warps,
/// 2 along M × 4 along N, each 64×32 = 4×4 mma tiles), K in steps of 32, two shared-memory stages.
/// A tile is kept in shared memory in its global layout: k-major ([outer][k], rows padded to 40
/// elements = 80 bytes) or outer-major ([k][outer], rows padded to 136 = 272 bytes); both paddings make
/// the eight 16-byte rows of an ldmatrix land in distinct bank quads. Staging moves 16-byte chunks
/// (8 elements) with cp.async: 512 chunks per 128×32 tile, two per thread.
/// </summary>
public static class MmaTiling
{
    public const int BM = 128, BN = 128, BK = 32, Threads = 256, WarpsN = 4, WM = 64, WN = 32, Pad = 8, Stages = 2;
    public const int ChunksPerTile = BM * BK / 8;

    public static int Stride(bool kMajor, int outer) => kMajor ? BK + Pad : outer + Pad;
    public static int TileElements(bool kMajor, int outer) => kMajor ? outer * (BK + Pad) : BK * (outer + Pad);

    /// <summary>Bytes of dynamic shared memory a launch needs: 2 stages × (A tile + B tile) + 16 for aligning
    /// the base.</summary>
    public static int SharedBytes(bool aKMajor, bool bKMajor) => Stages * 2 * (TileElements(aKMajor, BM) + TileElements(bKMajor, BN)) + 16;

    /// <summary>Outer index (m or n within the tile) of the first element of staging chunk c.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ChunkOuter(bool kMajor, int c) => kMajor ? c >> 2 : (c & 15) << 3;
    /// <summary>k index (within the tile) of the first element of chunk c.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ChunkK(bool kMajor, int c) => kMajor ? (c & 3) << 3 : c >> 4;
    /// <summary>Element offset of chunk c in its shared tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ChunkSmem(bool kMajor, int outer, int c) => kMajor ? (c >> 2) * (BK + Pad) + ((c & 3) << 3) : (c >> 4) * (outer + Pad) + ((c & 15) << 3);

    /// <summary>Element offset in global memory of chunk c of the tile at (outer0, k0): k-major rows are
    /// outer (leading dimension ld ≥ K), outer-major rows are k (ld ≥ the outer size).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long ChunkGlobal(bool kMajor, int outer0, int k0, int c, int ld) =>
        kMajor ? (long)(outer0 + ChunkOuter(true, c)) * ld + k0 + ChunkK(true, c)
               : (long)(k0 + ChunkK(false, c)) * ld + outer0 + ChunkOuter(false, c);

    /// <summary>Whether all 8 elements of chunk c lie inside the outer × K matrix (else it is zero-filled).
    /// Needs K % 8 == 0 for k-major and outer % 8 == 0 for outer-major operands, so that a chunk is
    /// wholly in or wholly out.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool ChunkInside(bool kMajor, int outer0, int k0, int c, int outerSize, int kSize) =>
        outer0 + ChunkOuter(kMajor, c) < outerSize && k0 + ChunkK(kMajor, c) < kSize;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static int WarpRow(int warp) => (warp / WarpsN) * WM;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static int WarpCol(int warp) => (warp % WarpsN) * WN;
}

/// <summary>
/// The inline-PTX instructions of version 2; the generated half (MmaPtx.Generated.cs, from
/// tools/gen-mma-ptx.py) holds the cp.async, ldmatrix, mma and epilogue strings over named PTX registers,
/// none of them with an output operand (ILGPU passes those through local memory). They run on CUDA only
/// (<see cref="CudaAsm.IsSupported"/>). ILGPU 1.5.3 cannot take the address of a view inside a kernel,
/// so shared memory is addressed through the symbol ILGPU gives dynamic shared memory
/// (<c>__dyn_shared_alloca</c>, a module-scope .extern .shared array, aligned up to 16 bytes in the
/// strings) and global operands through device addresses passed in as kernel parameters; the ptxas test
/// fails if either assumption stops holding.
/// </summary>
public static partial class MmaPtx
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void CommitGroup() => CudaAsm.Emit("cp.async.commit_group;");
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void WaitGroup0() => CudaAsm.Emit("cp.async.wait_group 0;");
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void WaitGroup1() => CudaAsm.Emit("cp.async.wait_group 1;");
}
