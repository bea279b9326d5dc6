package io.imago.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.regex.Pattern;
import javax.tools.JavaCompiler;
import javax.tools.ToolProvider;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Runs the text of clients/java/README.md: every {@code ```java} block is extracted, compiled
 * with the JDK's compiler (the first block, {@code String broker = "127.0.0.1:8123";}, with the
 * test broker's address, opens each snippet) and run in README order against a real broker.
 * Nothing here is a copy of the README: edit the README and this test runs the new text.
 */
@Timeout(120)
class ReadmeExamplesTest {
    static final String README_ADDRESS = "127.0.0.1:8123";
    static TestBroker testBroker;

    @BeforeAll
    static void start() throws Exception {
        testBroker = TestBroker.start();
    }

    @AfterAll
    static void stop() {
        testBroker.close();
    }

    static Path readme() {
        return Paths.get(System.getProperty("imago.client.dir", "."), "README.md");
    }

    /** The {@code ```java} blocks of the README, keyed by the heading above each (in order). */
    static Map<String, String> javaBlocks() throws Exception {
        Map<String, String> blocks = new LinkedHashMap<>();
        String heading = "";
        StringBuilder block = null;
        for (String line : Files.readAllLines(readme(), StandardCharsets.UTF_8)) {
            if (block != null) {
                if (line.equals("```")) {
                    String key = blocks.containsKey(heading) ? heading + " " + blocks.size() : heading;
                    blocks.put(key, block.toString());
                    block = null;
                } else {
                    block.append(line).append('\n');
                }
            } else if (line.equals("```java")) {
                block = new StringBuilder();
            } else if (line.startsWith("#")) {
                heading = line.replaceFirst("^#+\\s*", "");
            }
        }
        assertEquals(null, block, "unterminated ```java block in README.md");
        return blocks;
    }

    /** Prints what {@code snippet} printed to System.out while it ran. */
    static String run(Method snippet) throws Exception {
        PrintStream stdout = System.out;
        ByteArrayOutputStream printed = new ByteArrayOutputStream();
        System.setOut(new PrintStream(printed, true, StandardCharsets.UTF_8));
        try {
            snippet.invoke(null);
        } catch (InvocationTargetException e) {
            throw new AssertionError("README snippet " + snippet.getName() + " failed", e.getCause());
        } finally {
            System.setOut(stdout);
        }
        String out = printed.toString(StandardCharsets.UTF_8);
        stdout.print(out);
        return out;
    }

    @Test
    void theReadmesJavaBlocksCompileAndRunAsWritten() throws Exception {
        Map<String, String> blocks = javaBlocks();
        List<String> headings = new ArrayList<>(blocks.keySet());
        assertEquals(List.of("Use", "Produce", "Consume: poll", "Consume: iterate", "Consume: listener", "Admin",
                "Errors"), headings);
        String prelude = blocks.get("Use");
        assertTrue(prelude.contains("\"" + README_ADDRESS + "\""), prelude);
        prelude = prelude.replace(README_ADDRESS, testBroker.address());

        // One class, one static method per snippet, each opened by the README's broker line.
        StringBuilder src = new StringBuilder("import io.imago.client.*;\nimport java.time.Duration;\n\n"
                + "public class ReadmeSnippets {\n");
        List<String> names = new ArrayList<>();
        for (String h : headings.subList(1, headings.size())) {
            String name = "snippet" + names.size() + "_" + h.replaceAll("[^A-Za-z]", "");
            names.add(name);
            src.append("public static void ").append(name).append("() throws Exception {\n").append(prelude)
                    .append(blocks.get(h)).append("}\n\n");
        }
        src.append("}\n");
        Path dir = Files.createTempDirectory("imago-readme-");
        Path file = dir.resolve("ReadmeSnippets.java");
        Files.writeString(file, src);
        Path classes = Paths.get(ImagoProducer.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        assertTrue(javac != null, "no system Java compiler (a JDK is needed for the tests)");
        ByteArrayOutputStream diagnostics = new ByteArrayOutputStream();
        int rc = javac.run(null, diagnostics, diagnostics, "--release", "17", "-encoding", "UTF-8", "-classpath",
                classes.toString(), "-d", dir.toString(), file.toString());
        assertEquals(0, rc, "the README's Java does not compile:\n" + diagnostics + "\n" + src);

        try (URLClassLoader loader = new URLClassLoader(new URL[] {dir.toUri().toURL()},
                ImagoProducer.class.getClassLoader())) {
            Class<?> snippets = loader.loadClass("ReadmeSnippets");
            Map<String, String> out = new LinkedHashMap<>();
            for (int i = 0; i < names.size(); i++) {
                out.put(headings.get(i + 1), run(snippets.getMethod(names.get(i))));
            }

            // Produce: one "partition offset msgId" line; 1 + 1000 messages stored.
            assertTrue(Pattern.compile("^[0-3] \\d+ \\d+$", Pattern.MULTILINE).matcher(out.get("Produce")).find(),
                    out.get("Produce"));
            try (ImagoAdmin admin = new ImagoAdmin(testBroker.address())) {
                long stored = admin.maxOffsets("orders").values().stream().mapToLong(Long::longValue).sum();
                assertEquals(1001, stored);

                // Poll with the tag filter: every message tagged "created" (1 + 500), once.
                long created = out.get("Consume: poll").lines().filter(l -> l.contains(" created ")).count();
                assertEquals(501, created, "every message tagged created, once");
                assertEquals(501, out.get("Consume: poll").lines().count(), "only tag created");

                // Iterate: 100 messages, and exactly those 100 committed by close.
                assertEquals(100, out.get("Consume: iterate").lines().filter(l -> l.startsWith("shipping ")).count());
                long committed = 0;
                for (int p = 0; p < 4; p++) {
                    OptionalLong c = admin.fetchCommitted("shipping", "orders", p);
                    committed += c.orElse(0);
                }
                assertEquals(100, committed, "the messages handed out, no more");

                // Listener (broadcast): the keyed message came through.
                assertTrue(out.get("Consume: listener").contains("order-42 order 42 created"),
                        out.get("Consume: listener"));

                // Admin: version first, then the maps.
                assertEquals(admin.version(), out.get("Admin").lines().findFirst().orElse(""));
                assertTrue(out.get("Admin").contains("orders:0:max_offset="), out.get("Admin"));
                assertTrue(out.get("Admin").contains("group:billing:orders:lag="), out.get("Admin"));
            }

            // Errors: the typed exception with the broker's code and message.
            assertTrue(out.get("Errors").contains("400 partition 99 out of range, topic orders has 4 partitions"),
                    out.get("Errors"));
        }
    }
}
