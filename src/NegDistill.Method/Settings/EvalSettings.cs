namespace NegDistill.Method.Settings;

/// <summary>Step 3 on a trained student (method.md: N candidates per question, voted by SC, WS and
/// ASC): `sample` and `eval`'s options and the pipeline's <c>eval</c> section.</summary>
public sealed record EvalSettings
{
    public string? Data { get; set; }
    public string Task { get; set; } = "math";
    /// <summary>Pipeline only: which stage's adapter to evaluate, or "base".</summary>
    public string Student { get; set; } = "nce";
    public int N { get; set; } = 16;
    public int MaxNewTokens { get; set; } = 256;
    public float Temperature { get; set; } = 0.7f;
    public int Limit { get; set; }
    public int Slots { get; set; }
    public string KvCache { get; set; } = "auto";
    public bool SharePrompt { get; set; } = true;

    public static class Keys
    {
        public static readonly SettingInfo Data = new("--data", "eval.data", "MATH (JSON per problem or JSONL) or GSM8K JSONL test data: file, folder or glob");
        public static readonly SettingInfo Task = new("--task", "eval.task", "math or gsm8k");
        public static readonly SettingInfo Student = new(null, "eval.student", "which stage's adapter to evaluate (or base)");
        public static readonly SettingInfo N = new("--n", "eval.n", "candidates per question (votes at 1, 2, 4, 8, 16 up to this)");
        public static readonly SettingInfo MaxNewTokens = new("--max-new", "eval.max_new_tokens", "token budget per candidate");
        public static readonly SettingInfo Temperature = new("--temperature", "eval.temperature", "sampling temperature (positive)");
        public static readonly SettingInfo Limit = new("--limit", "eval.limit", "only the first K questions (0: all)");
        public static readonly SettingInfo Slots = new("--slots", "eval.slots", "KV-cache slots, i.e. sequences decoded at once (0: the most that fit the device, up to 256)");
        public static readonly SettingInfo SharePrompt = new("--share-prompt", "eval.share_prompt", "the N candidates of a question read one copy of its prompt, prefilled once (false: each holds and prefills its own)");
        public static readonly SettingInfo KvCache = new("--kv-cache", "eval.kv_cache", "KV-cache element type: auto (bf16 on a GPU, f32 on the CPU), f32, bf16 or f16; 16 bits hold twice the slots");
    }

    public static readonly string[] Tasks = ["math", "gsm8k"];
    public static readonly string[] KvCacheTypes = ["auto", "f32", "bf16", "f16"];

    /// <summary>Checks what sampling reads; <paramref name="data"/> false leaves the test data out (vote reads it itself).</summary>
    public void Check(SettingsCheck c, bool data = true)
    {
        if (data) c.Exists(Data, Keys.Data, "the MATH or GSM8K test data (file, folder or glob)", ".json", ".jsonl");
        c.Require(Tasks.Contains(Task), Keys.Task, $"'{Task}' is not math or gsm8k");
        c.Positive(N, Keys.N);
        c.Positive(MaxNewTokens, Keys.MaxNewTokens);
        c.Require(float.IsFinite(Temperature) && Temperature > 0, Keys.Temperature,
            $"must be a positive number (got {Temperature}); at 0 the N candidates would be N copies of the greedy answer, which eval decodes anyway");
        c.NonNegative(Limit, Keys.Limit, "every question");
        c.NonNegative(Slots, Keys.Slots, "the most that fit");
        c.Require(KvCacheTypes.Contains(KvCache), Keys.KvCache, $"'{KvCache}' is not auto, f32, bf16 or f16");
    }

    /// <summary>The KV cache's element type on <paramref name="ops"/>: the named one, or the backend's default for auto.</summary>
    public Runtime.DType KvCacheType(Runtime.IBackend ops) => CacheType(KvCache) ?? ops.DefaultKvCache;

    /// <summary>f32, bf16, f16 → their type; auto → null (the backend decides).</summary>
    public static Runtime.DType? CacheType(string name) => name switch
    {
        "f32" => Runtime.DType.F32, "bf16" => Runtime.DType.BF16, "f16" => Runtime.DType.F16, "auto" => null,
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "a KV cache is auto, f32, bf16 or f16"),
    };

    public Data.Evaluation.AnswerTask AnswerTask => Task == "gsm8k" ? NegDistill.Data.Evaluation.AnswerTask.Gsm8k : NegDistill.Data.Evaluation.AnswerTask.Math;
}
