using System.Runtime.InteropServices;
using System.Runtime.Loader;

namespace NegDistill.Kernels;

/// <summary>
/// Finding the CUDA driver library, and saying exactly why no CUDA device appeared. ILGPU 1.5.3 opens the
/// driver by the name `cuda`, which .NET resolves to libcuda.so; many driver installs ship only
/// libcuda.so.1 (the unversioned name comes with development packages), and then ILGPU silently sees no
/// device. <see cref="InstallResolver"/> adds the versioned names as a fall-back for that one library.
/// </summary>
public static class CudaDriver
{
    static int _installed;

    /// <summary>The names and places tried after .NET's own probing fails, most common first.</summary>
    public static readonly string[] Candidates =
    [
        "libcuda.so.1", "libcuda.so",
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1",
        "/usr/lib/wsl/lib/libcuda.so.1", "/usr/local/cuda/compat/libcuda.so.1",
    ];

    public static void InstallResolver()
    {
        if (Interlocked.Exchange(ref _installed, 1) != 0) return;
        AssemblyLoadContext.Default.ResolvingUnmanagedDll += (_, name) =>
        {
            if (name is not ("cuda" or "libcuda" or "libcuda.so")) return IntPtr.Zero;
            foreach (var c in Candidates)
                if (NativeLibrary.TryLoad(c, out var h)) return h;
            return IntPtr.Zero;
        };
    }

    /// <summary>One line: which driver library loads, or every loader error seen.</summary>
    public static string Probe()
    {
        var errors = new List<string>();
        foreach (var c in Candidates)
        {
            try
            {
                var h = NativeLibrary.Load(c);
                bool init = NativeLibrary.TryGetExport(h, "cuInit", out _);
                return $"CUDA driver library: {c} loads{(init ? "" : " but exports no cuInit")}";
            }
            catch (DllNotFoundException e)
            {
                // .NET's message is a generic sentence, then the loader's own reason on the next line
                var lines = e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                errors.Add(lines.Length > 1 ? lines[^1] : lines[0]);
            }
        }
        return "CUDA driver library: not found (" + string.Join("; ", errors.Take(2)) + (errors.Count > 2 ? $"; {errors.Count - 2} more places tried" : "") + ")";
    }
}
