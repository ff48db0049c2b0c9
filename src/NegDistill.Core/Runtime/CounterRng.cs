namespace NegDistill.Runtime;

/// <summary>
/// Counter-based random numbers: the value for (seed, counter) is a pure function of the two, so a
/// kernel thread, a CPU loop and a resumed run all draw the same number for the same element no
/// matter how work is scheduled. The mixer is SplitMix64's finaliser (Steele, Lea, Flood 2014).
/// Only integer arithmetic, no allocation: callable from ILGPU kernels.
/// </summary>
public static class CounterRng
{
    public static ulong Hash(ulong seed, ulong counter)
    {
        ulong z = seed + (counter + 1UL) * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1) with 24 bits, exact in fp32.</summary>
    public static float Uniform(ulong seed, ulong counter) => (Hash(seed, counter) >> 40) * (1.0f / 16777216.0f);

    /// <summary>Derives a sub-stream seed (e.g. one per layer and step) from a parent seed.</summary>
    public static ulong Derive(ulong seed, ulong a, ulong b = 0) => Hash(Hash(seed, a), b ^ 0x5851F42D4C957F2DUL);
}
