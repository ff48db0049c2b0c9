using System.Text.Json;
using System.Text.Json.Serialization;
using NegDistill.Method.Settings;
using NegDistill.Method.Stages;

namespace NegDistill.Method;

/// <summary>The method library's JSON: the pipeline config (snake_case fields; comments, trailing
/// commas; unknown fields refused) and the logs the stages write, as records with source generation.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, ReadCommentHandling = JsonCommentHandling.Skip,
    AllowTrailingCommas = true, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(PipelineConfig))]
[JsonSerializable(typeof(AlphaRecord))]
[JsonSerializable(typeof(BetaRecord))]
[JsonSerializable(typeof(SelfAugmentation))]
[JsonSerializable(typeof(Testbed.TestbedResults))]
[JsonSerializable(typeof(SortedDictionary<string, string>))]
public sealed partial class MethodJson : JsonSerializerContext;
