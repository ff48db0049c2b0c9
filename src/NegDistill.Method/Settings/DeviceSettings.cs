namespace NegDistill.Method.Settings;

/// <summary>Where the run computes, and how much memory its plans may take.</summary>
public sealed record DeviceSettings
{
    public string Device { get; init; } = "cpu";
    /// <summary>Plan against this many GB instead of the device's memory; 0: the device's.</summary>
    public double MemoryLimitGb { get; init; }

    public static class Keys
    {
        public static readonly SettingInfo Device = new("--device", "device", Backends.Help);
        public static readonly SettingInfo MemoryLimitGb = new("--memory-limit", "memory_limit_gb", "plan against this many GB instead of the device's memory (0: the device's)");
    }

    public void Check(SettingsCheck c)
    {
        c.Require(Backends.Names.Contains(Device), Keys.Device, $"unknown device '{Device}' ({string.Join(", ", Backends.Names)})");
        c.Require(double.IsFinite(MemoryLimitGb) && MemoryLimitGb >= 0, Keys.MemoryLimitGb, $"must be 0 (the device's memory) or a positive number of GB (got {MemoryLimitGb})");
    }

    /// <summary>The bytes plans are checked against when a limit is set.</summary>
    public long? LimitBytes => MemoryLimitGb > 0 ? (long)(MemoryLimitGb * 1e9) : null;
}
