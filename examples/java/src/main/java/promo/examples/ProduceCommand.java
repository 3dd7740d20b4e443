package promo.examples;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.PrintStream;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.apache.avro.AvroRuntimeException;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Publishes one promo command straight to Kafka, without ingest: a "direct
 * producer" (docs/producers.md) written with nothing but the Apache Kafka Java
 * client and Avro's GenericRecord API, reading the schemas from the
 * repository's schemas/*.avsc. What every producer must do:
 *
 * <ul>
 * <li>topic promo.coupon.cmd, promo.point.cmd or promo.timesale.cmd;
 * <li>key = the entity key, UTF-8: policy_id, user_id or sale_id (for a coupon
 * id "&lt;policy_id&gt;:&lt;serial&gt;", its policy part);
 * <li>value = Confluent framing: byte 0x00, the fixed schema id (1 coupon, 2
 * point, 3 time sale) as a 4-byte big-endian int, then the Avro binary body;
 * no schema registry;
 * <li>the Java client's default partitioner, murmur2 of the key, which is
 * ingest's: the key lands on the partition whose processor holds its entity;
 * <li>acks=all and idempotence, so an acknowledged command is durable and the
 * client's own retries do not write it twice.
 * </ul>
 *
 * <pre>
 * java -jar target/promo-produce-command.jar --bootstrap HOST:PORT coupon issue --policy-id P --user-id U [--request-id R]
 * java -jar target/promo-produce-command.jar --bootstrap HOST:PORT point earn --user-id U --amount 500 --reason signup
 * java -jar target/promo-produce-command.jar --bootstrap HOST:PORT timesale order --sale-id S --user-id U --quantity 1
 * </pre>
 *
 * The request id is the last line on stdout; the exit status is 0 once Kafka
 * acknowledged the command, 1 if it was not sent, 2 for a usage error.
 * --dry-run prints topic, key and the framed value in hex instead, like
 * examples/produce_command.py --dry-run, byte for byte.
 */
public final class ProduceCommand {
    static final long DAY_MS = 86_400_000L;

    /** Fixed, public schema ids (DESIGN.md §3), topics and schema files per domain. */
    record Domain(String topic, int schemaId, String schemaFile) {}

    static final Map<String, Domain> DOMAINS = new LinkedHashMap<>();

    static {
        DOMAINS.put("coupon", new Domain("promo.coupon.cmd", 1, "coupon_command.avsc"));
        DOMAINS.put("point", new Domain("promo.point.cmd", 2, "point_command.avsc"));
        DOMAINS.put("timesale", new Domain("promo.timesale.cmd", 3, "timesale_command.avsc"));
    }

    /** A default of a field left out: a function of the command's time and the values so far. */
    interface Default {
        Object value(long now, Map<String, Object> values);
    }

    static Default constant(Object v) {
        return (now, values) -> v;
    }

    /** One CLI command: its Avro record in the domain's command union, the field that is the key, defaults. */
    record Command(String record, String keyField, Map<String, Default> defaults) {}

    static final Map<String, Map<String, Command>> COMMANDS = new LinkedHashMap<>();

    static void command(String domain, String name, String record, String keyField, Object... defaults) {
        Map<String, Default> d = new LinkedHashMap<>();
        for (int i = 0; i < defaults.length; i += 2) {
            Object v = defaults[i + 1];
            d.put((String) defaults[i], v instanceof Default dv ? dv : constant(v));
        }
        COMMANDS.computeIfAbsent(domain, k -> new LinkedHashMap<>()).put(name, new Command(record, keyField, d));
    }

    static {
        command("coupon", "create-policy", "CreateCouponPolicy", "policy_id",
                "min_order_amount", 0L, "per_user_limit", 1,
                "issue_starts_at", (Default) (now, v) -> now,
                "issue_ends_at", (Default) (now, v) -> now + 30 * DAY_MS,
                // One of valid_until / valid_days is required: 30 days unless told.
                "valid_days", (Default) (now, v) -> v.get("valid_until") != null ? null : 30);
        command("coupon", "issue", "IssueCoupon", "policy_id");
        command("coupon", "redeem", "RedeemCoupon", "coupon_id");
        command("coupon", "cancel", "CancelRedemption", "coupon_id");
        command("point", "earn", "EarnPoints", "user_id");
        command("point", "use", "UsePoints", "user_id");
        command("point", "cancel", "CancelPointUse", "user_id");
        command("timesale", "create", "CreateTimeSale", "sale_id",
                "per_user_limit", 1,
                "starts_at", (Default) (now, v) -> now,
                "ends_at", (Default) (now, v) -> now + DAY_MS);
        command("timesale", "order", "PlaceOrder", "sale_id", "quantity", 1); // order_id null: the request id names the order
        command("timesale", "cancel", "CancelOrder", "sale_id");
    }

    /** Envelope fields other than the command, settable on every command. */
    static final List<String> ENVELOPE_OPTIONS = List.of("request-id", "submitted-at", "callback-url", "client-id");

    static final class UsageError extends Exception {
        UsageError(String message) {
            super(message);
        }
    }

    // ---- the wire format --------------------------------------------------------------------------------------

    /** Confluent wire format: magic byte 0, schema id (4 bytes, big-endian), Avro binary body. */
    static byte[] frame(int schemaId, byte[] body) {
        byte[] out = new byte[5 + body.length];
        out[0] = 0;
        out[1] = (byte) (schemaId >>> 24);
        out[2] = (byte) (schemaId >>> 16);
        out[3] = (byte) (schemaId >>> 8);
        out[4] = (byte) schemaId;
        System.arraycopy(body, 0, out, 5, body.length);
        return out;
    }

    /** The Avro binary encoding of one record (no framing). */
    static byte[] encode(GenericRecord envelope) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        BinaryEncoder enc = EncoderFactory.get().binaryEncoder(out, null);
        new GenericDatumWriter<GenericRecord>(envelope.getSchema()).write(envelope, enc);
        enc.flush();
        return out.toByteArray();
    }

    /** The branch of the envelope's command union named record. */
    static Schema commandBranch(Schema envelope, String record) throws UsageError {
        for (Schema s : envelope.getField("command").schema().getTypes()) {
            if (s.getName().equals(record)) {
                return s;
            }
        }
        throw new UsageError(record + " is not in " + envelope.getFullName() + "'s command union");
    }

    /** The envelope: request id, time, callback, client, and the command record (GenericRecord throughout). */
    static GenericRecord envelope(Schema envelope, String record, Map<String, Object> fields, String requestId,
            long submittedAt, String callbackUrl, String clientId) throws UsageError {
        Schema branch = commandBranch(envelope, record);
        GenericRecord cmd = new GenericData.Record(branch);
        for (Schema.Field f : branch.getFields()) {
            cmd.put(f.name(), fields.get(f.name()));
        }
        GenericRecord env = new GenericData.Record(envelope);
        env.put("request_id", requestId);
        env.put("submitted_at", submittedAt); // timestamp-millis: a plain long on the wire
        env.put("callback_url", callbackUrl);
        env.put("client_id", clientId);
        env.put("command", cmd); // GenericData picks the union branch by the record's name
        if (!GenericData.get().validate(envelope, env)) {
            for (Schema.Field f : branch.getFields()) {
                if (!GenericData.get().validate(f.schema(), cmd.get(f.name()))) {
                    throw new UsageError(record + "." + f.name() + ": " + cmd.get(f.name()) + " is not a "
                            + f.schema());
                }
            }
            throw new UsageError("the envelope does not match " + envelope.getFullName());
        }
        return env;
    }

    /** The message key: the entity the command acts on. */
    static String entityKey(Command c, Map<String, Object> fields) {
        String key = (String) fields.get(c.keyField());
        if (c.keyField().equals("coupon_id")) {
            int colon = key.lastIndexOf(':'); // "<policy_id>:<serial>" lives with its policy
            if (colon >= 0) {
                key = key.substring(0, colon);
            }
        }
        return key;
    }

    static String newRequestId() {
        // Request ids match [A-Za-z0-9_.-]{1,64}; a UUID's hex fits.
        return "java-" + UUID.randomUUID().toString().replace("-", "");
    }

    // ---- the producer -----------------------------------------------------------------------------------------

    /** A producer set up as every direct producer should be. */
    static KafkaProducer<String, byte[]> producer(String bootstrap) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "promo-produce-command-java");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        // partitioner.class stays unset: for a keyed record the Java client's
        // default is murmur2(key) & 0x7fffffff modulo the partition count.
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        // Fail within half a minute rather than the client's default two.
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        // 5 is safe with Apache Kafka; librdkafka's mock cluster (the old dev
        // broker) does not check idempotent sequences and needs 1, which the
        // local fleet sets in PROMO_KAFKA_MAX_IN_FLIGHT.
        String inFlight = System.getenv("PROMO_KAFKA_MAX_IN_FLIGHT");
        p.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION,
                inFlight == null || inFlight.isBlank() ? "5" : inFlight.trim());
        return new KafkaProducer<>(p, new StringSerializer(), new ByteArraySerializer());
    }

    // ---- finding things ---------------------------------------------------------------------------------------

    /** This jar's (or classes folder's) location, to find the repository's schemas/ from. */
    static Path codeLocation() {
        try {
            return Paths.get(ProduceCommand.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        } catch (URISyntaxException | SecurityException | NullPointerException e) {
            return null;
        }
    }

    /** --schemas, else $PROMO_SCHEMAS_DIR, else the first schemas/ above this jar or above the working directory. */
    static Path schemasDir(String option) throws UsageError {
        if (option == null) {
            option = System.getenv("PROMO_SCHEMAS_DIR");
        }
        if (option != null && !option.isEmpty()) {
            Path p = Paths.get(option);
            if (!Files.isRegularFile(p.resolve("coupon_command.avsc"))) {
                throw new UsageError(p + " has no coupon_command.avsc");
            }
            return p;
        }
        for (Path start : new Path[] {codeLocation(), Paths.get("").toAbsolutePath()}) {
            for (Path d = start; d != null; d = d.getParent()) {
                Path s = d.resolve("schemas");
                if (Files.isRegularFile(s.resolve("coupon_command.avsc"))) {
                    return s;
                }
            }
        }
        throw new UsageError("cannot find the repository's schemas/ folder: pass --schemas DIR");
    }

    /** $PROMO_KAFKA_BOOTSTRAP, or the broker list the local fleet wrote (var/kafka.bootstrap). */
    static String defaultBootstrap(Path schemas) {
        String env = System.getenv("PROMO_KAFKA_BOOTSTRAP");
        if (env != null && !env.isEmpty()) {
            return env;
        }
        String file = System.getenv("PROMO_KAFKA_BOOTSTRAP_FILE");
        Path path = file != null && !file.isEmpty() ? Paths.get(file)
                : schemas.toAbsolutePath().getParent().resolve("var").resolve("kafka.bootstrap");
        try {
            List<String> lines = Files.readAllLines(path, StandardCharsets.UTF_8);
            return lines.isEmpty() || lines.get(0).isBlank() ? null : lines.get(0).trim();
        } catch (IOException e) {
            return null;
        }
    }

    static Schema parseSchema(Path dir, String domain) throws UsageError {
        Path file = dir.resolve(DOMAINS.get(domain).schemaFile());
        try {
            return new Schema.Parser().parse(file.toFile());
        } catch (IOException | AvroRuntimeException e) {
            throw new UsageError("cannot read " + file + ": " + e.getMessage());
        }
    }

    // ---- the command line -------------------------------------------------------------------------------------

    static String option(String field) {
        return field.replace('_', '-');
    }

    /** The schema of a field, without its ["null", ...] union. */
    static Schema nonNull(Schema s) {
        if (s.getType() == Schema.Type.UNION) {
            for (Schema b : s.getTypes()) {
                if (b.getType() != Schema.Type.NULL) {
                    return b;
                }
            }
        }
        return s;
    }

    static boolean nullable(Schema s) {
        return s.getType() == Schema.Type.UNION
                && s.getTypes().stream().anyMatch(b -> b.getType() == Schema.Type.NULL);
    }

    /** A command-line value as the Avro datum of the field's type. */
    static Object datum(Schema.Field f, String text) throws UsageError {
        Schema s = nonNull(f.schema());
        try {
            switch (s.getType()) {
                case STRING:
                    return text;
                case LONG:
                    return Long.parseLong(text);
                case INT:
                    return Integer.parseInt(text);
                case ENUM:
                    if (!s.hasEnumSymbol(text)) {
                        throw new UsageError("--" + option(f.name()) + ": one of " + s.getEnumSymbols());
                    }
                    return new GenericData.EnumSymbol(s, text);
                default:
                    throw new UsageError("--" + option(f.name()) + ": type " + s.getType() + " not supported here");
            }
        } catch (NumberFormatException e) {
            throw new UsageError("--" + option(f.name()) + ": not an integer: " + text);
        }
    }

    static String describe(Schema.Field f, Command c) {
        Schema s = nonNull(f.schema());
        String type = s.getType() == Schema.Type.ENUM ? String.join("|", s.getEnumSymbols())
                : s.getType().getName();
        if (f.name().endsWith("_at") || f.name().equals("valid_until")) {
            type += ", ms since the epoch";
        }
        String when = c.defaults().containsKey(f.name()) ? "optional" : nullable(f.schema()) ? "optional" : "required";
        return String.format("  --%-20s %s (%s)%s", option(f.name()), type, when,
                f.name().equals(c.keyField()) ? ", the message key" : "");
    }

    static void usage(PrintStream out) {
        out.println("usage: java -jar promo-produce-command.jar [--bootstrap HOST:PORT[,...]] [--schemas DIR]");
        out.println("           [--dry-run] [--verbose] DOMAIN COMMAND [--FIELD VALUE ...]");
        out.println();
        out.println("Publishes one promo command to Kafka directly (Confluent-framed Avro, no registry);");
        out.println("prints the request id, exits 0 once Kafka acknowledged it.");
        out.println();
        out.println("  --bootstrap   default $PROMO_KAFKA_BOOTSTRAP, else the local fleet's var/kafka.bootstrap");
        out.println("  --schemas     the folder of *.avsc files (default $PROMO_SCHEMAS_DIR, else the");
        out.println("                repository's schemas/ above this jar or the working directory)");
        out.println("  --dry-run     print topic, key and the framed value in hex; send nothing");
        out.println("  --verbose     also print topic, partition and offset to stderr");
        out.println();
        out.println("commands (DOMAIN COMMAND --help lists the fields):");
        COMMANDS.forEach((domain, cmds) -> cmds.forEach((name, c) -> out.printf("  %-8s %-14s %s -> %s%n",
                domain, name, c.record(), DOMAINS.get(domain).topic())));
        out.println();
        out.println("every command also takes --request-id (default: a new id), --submitted-at (ms, default now),");
        out.println("--callback-url and --client-id");
    }

    static void commandUsage(PrintStream out, String domain, String name, Command c, Schema branch) {
        out.printf("usage: java -jar promo-produce-command.jar [options] %s %s [--FIELD VALUE ...]%n%n", domain, name);
        out.printf("%s on %s, key %s%n", c.record(), DOMAINS.get(domain).topic(), c.keyField());
        for (Schema.Field f : branch.getFields()) {
            out.println(describe(f, c));
        }
        out.println("  --request-id           string (optional, default: a new unique id)");
        out.println("  --submitted-at         long, ms since the epoch (optional, default now): the processor's clock");
        out.println("  --callback-url         string (optional): webhook for the result");
        out.println("  --client-id            string (optional)");
    }

    static int run(String[] argv) throws UsageError {
        String bootstrap = null;
        String schemasOpt = null;
        boolean dryRun = false;
        boolean verbose = false;
        boolean help = false;
        List<String> positional = new ArrayList<>();
        Map<String, String> options = new LinkedHashMap<>();
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i];
            if (a.equals("-h") || a.equals("--help")) {
                help = true;
                continue;
            }
            if (a.equals("--dry-run")) {
                dryRun = true;
                continue;
            }
            if (a.equals("-v") || a.equals("--verbose")) {
                verbose = true;
                continue;
            }
            if (!a.startsWith("--")) {
                positional.add(a);
                continue;
            }
            String name = a.substring(2);
            String value;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            } else if (i + 1 < argv.length) {
                value = argv[++i];
            } else {
                throw new UsageError(a + " needs a value");
            }
            if (name.equals("bootstrap")) {
                bootstrap = value;
            } else if (name.equals("schemas")) {
                schemasOpt = value;
            } else if (options.put(name, value) != null) {
                throw new UsageError("--" + name + " given twice");
            }
        }
        if (positional.isEmpty()) {
            if (help) {
                usage(System.out);
                return 0;
            }
            throw new UsageError("DOMAIN and COMMAND are required");
        }
        String domain = positional.get(0);
        Map<String, Command> cmds = COMMANDS.get(domain);
        if (cmds == null) {
            throw new UsageError("unknown domain " + domain + ": one of " + COMMANDS.keySet());
        }
        if (positional.size() < 2) {
            if (help) {
                usage(System.out);
                return 0;
            }
            throw new UsageError("COMMAND is required: one of " + cmds.keySet());
        }
        if (positional.size() > 2) {
            throw new UsageError("unexpected argument " + positional.get(2));
        }
        String name = positional.get(1);
        Command c = cmds.get(name);
        if (c == null) {
            throw new UsageError("unknown " + domain + " command " + name + ": one of " + cmds.keySet());
        }
        Path schemas = schemasDir(schemasOpt);
        Schema envelope = parseSchema(schemas, domain);
        Schema branch = commandBranch(envelope, c.record());
        if (help) {
            commandUsage(System.out, domain, name, c, branch);
            return 0;
        }

        long now;
        try {
            String at = options.remove("submitted-at");
            now = at == null ? System.currentTimeMillis() : Long.parseLong(at);
        } catch (NumberFormatException e) {
            throw new UsageError("--submitted-at: not an integer");
        }
        String requestId = options.remove("request-id");
        if (requestId == null) {
            requestId = newRequestId();
        }
        String callbackUrl = options.remove("callback-url");
        String clientId = options.remove("client-id");

        Map<String, Object> fields = new LinkedHashMap<>();
        for (Schema.Field f : branch.getFields()) {
            String text = options.remove(option(f.name()));
            Object v = text != null ? datum(f, text) : null;
            if (v == null && c.defaults().containsKey(f.name())) {
                v = c.defaults().get(f.name()).value(now, fields);
            }
            if (v == null && !nullable(f.schema())) {
                throw new UsageError("--" + option(f.name()) + " is required");
            }
            fields.put(f.name(), v);
        }
        if (!options.isEmpty()) {
            throw new UsageError("unknown option --" + options.keySet().iterator().next() + " for " + domain + " "
                    + name + " (--help lists its fields)");
        }

        Domain d = DOMAINS.get(domain);
        GenericRecord env = envelope(envelope, c.record(), fields, requestId, now, callbackUrl, clientId);
        byte[] value;
        try {
            value = frame(d.schemaId(), encode(env));
        } catch (IOException | AvroRuntimeException | NullPointerException e) {
            System.err.println("produce-command: cannot encode: " + e.getMessage());
            return 2;
        }
        String key = entityKey(c, fields);

        if (dryRun) {
            System.out.println("topic " + d.topic());
            System.out.println("key " + key);
            System.out.println("value " + HexFormat.of().formatHex(value));
            System.out.println(requestId);
            return 0;
        }
        if (bootstrap == null) {
            bootstrap = defaultBootstrap(schemas);
        }
        if (bootstrap == null) {
            throw new UsageError("--bootstrap is required (no $PROMO_KAFKA_BOOTSTRAP, no var/kafka.bootstrap)");
        }

        KafkaProducer<String, byte[]> p;
        try {
            p = producer(bootstrap);
        } catch (RuntimeException e) { // a ConfigException: a bad broker list or setting
            System.err.println("produce-command: " + e.getMessage());
            return 1;
        }
        try {
            RecordMetadata md = p.send(new ProducerRecord<>(d.topic(), key, value)).get(40, TimeUnit.SECONDS);
            if (verbose) {
                System.err.printf("%s [%d] @%d key %s%n", md.topic(), md.partition(), md.offset(), key);
            }
        } catch (ExecutionException e) {
            System.err.println("produce-command: delivery failed: " + e.getCause());
            if (e.getCause() instanceof org.apache.kafka.common.errors.TimeoutException) {
                System.err.println("produce-command: no broker of " + bootstrap + " answered in time; note that the"
                        + " Java client cannot talk to librdkafka's mock cluster (docs/producers.md)");
            }
            return 1;
        } catch (TimeoutException e) {
            System.err.println("produce-command: no acknowledgement from Kafka after 40 s");
            return 1;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            System.err.println("produce-command: interrupted");
            return 1;
        } catch (RuntimeException e) { // the send itself failed: metadata timeout, record too large
            System.err.println("produce-command: " + e);
            return 1;
        } finally {
            p.close(Duration.ofSeconds(5));
        }
        System.out.println(requestId);
        return 0;
    }

    public static void main(String[] argv) {
        // slf4j-simple: the Kafka client's warnings and errors go to stderr, not its chatter.
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        int status;
        try {
            status = run(argv);
        } catch (UsageError e) {
            System.err.println("produce-command: " + e.getMessage());
            System.err.println("(--help for usage)");
            status = 2;
        }
        System.out.flush();
        System.exit(status);
    }

    private ProduceCommand() {}
}
