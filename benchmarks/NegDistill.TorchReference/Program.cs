// negdistill-torch: TorchSharp reference for NegDistill.
//   worker CASE IN_DIR OUT_DIR   run one parity case on tensors the engine wrote (see Worker.cs)
//   bench [options]              time NegDistill and TorchSharp side by side in this process (see Bench.cs)
// Run through .cache/torchsharp/dotnet-trixie (tools/torchsharp/setup.sh).
namespace NegDistill.TorchReference;

public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.WriteLine("usage: NegDistill.TorchReference worker CASE IN_DIR OUT_DIR | bench [options]");
            return args.Length == 0 ? 2 : 0;
        }
        return args[0] switch
        {
            "worker" => Worker.Run(args[1..]),
            "bench" => Bench.Run(args[1..]),
            _ => Fail($"unknown verb '{args[0]}' (expected worker or bench)"),
        };
    }

    static int Fail(string message) { Console.Error.WriteLine(message); return 2; }
}
