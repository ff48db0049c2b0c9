using System.CommandLine;
using NegDistill.Method.Settings;
using NegDistill.Method.Testbed;

namespace NegDistill.Cli;

/// <summary>`negdistill demo`: the embedded default, the testbed of NegDistill.Method.Testbed, with its
/// options bound into <see cref="TestbedSettings"/>.</summary>
static class Demo
{
    public static Command Build()
    {
        var cmd = new Command("demo", "Run the embedded testbed end to end on this machine: generated problems, a noisy teacher, the split, a LLaMA pretrained from scratch, "
            + "every stage, baseline and ablation of the method for several seeds, greedy accuracy with intervals and paired tests against CoT KD, per level, SC / WS / ASC.");
        var demo = new Bound<TestbedSettings>(new TestbedSettings());
        demo.Add(cmd, TestbedSettings.Keys.Out, s => s.Out, (s, v) => s with { Out = v });
        demo.Add(cmd, TestbedSettings.Keys.Seed, s => s.Seed, (s, v) => s with { Seed = v });
        demo.Add(cmd, TestbedSettings.Keys.Seeds, s => s.Seeds, (s, v) => s with { Seeds = v });
        demo.Add(cmd, TestbedSettings.Keys.Quick, s => s.Quick, (s, v) => s with { Quick = v });
        demo.Add(cmd, TestbedSettings.Keys.SharedBase, s => s.SharedBase, (s, v) => s with { SharedBase = v });
        demo.Add(cmd, TestbedSettings.Keys.TestProblems, s => s.TestProblems, (s, v) => s with { TestProblems = v });
        demo.Add(cmd, TestbedSettings.Keys.PretrainSteps, s => s.PretrainSteps, (s, v) => s with { PretrainSteps = v });
        demo.Add(cmd, TestbedSettings.Keys.StageSteps, s => s.StageSteps, (s, v) => s with { StageSteps = v });
        demo.Add(cmd, TestbedSettings.Keys.MicroBatch, s => s.MicroBatch, (s, v) => s with { MicroBatch = v });
        var dev = new Bound<DeviceSettings>(new DeviceSettings());
        dev.Add(cmd, DeviceSettings.Keys.Device, s => s.Device, (s, v) => s with { Device = v });
        cmd.SetAction(r => Cli.Guarded(ct => Testbed.Run(demo.Bind(r), dev.Bind(r), Cli.Console, ct)));
        return cmd;
    }
}
