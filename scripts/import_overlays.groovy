/*
 * Import wsi-ccrl overlays into every image of the open QuPath project (QuPath 0.4, 0.5, 0.6).
 *
 * `wsi-ccrl label` writes one overlay per slide, named after the slide file: slide.svs gives
 * slide.geojson (or slide.geojson.gz). For each image of the project this finds the overlay whose
 * name is the image file's name without its extension, adds its detections and saves the image.
 * Running it again replaces the detections it added before (matched by their object IDs), so a
 * re-export with new cluster names updates the project; other objects are left alone.
 *
 * Use: open the project, Automate > Script editor, File > Open this script, set OVERLAYS below
 * to the `label --out` folder (or copy that folder into the project folder as `labels`), then Run
 * (not "Run for project": the script visits every image itself). Large slides need memory: QuPath reads each file whole
 * (Edit > Preferences > General > Memory).
 */

import qupath.lib.io.PathIO

import java.nio.file.Files
import java.nio.file.Path
import java.nio.file.Paths

String OVERLAYS = null     // folder of the .geojson / .geojson.gz files; null: <project>/labels
boolean RESOLVE = false    // true: put detections under the annotations that contain them (slow)

def project = getProject()
if (project == null) {
    println "Open a project first (File > Open project)."
    return
}
Path folder = OVERLAYS != null ? Paths.get(OVERLAYS) : Paths.get(buildFilePath(PROJECT_BASE_DIR, "labels"))
if (!Files.isDirectory(folder)) {
    println "No overlay folder ${folder}: set OVERLAYS at the top of the script"
    return
}

int imported = 0, missing = 0
for (entry in project.getImageList()) {
    Path overlay = findOverlay(entry, folder)
    if (overlay == null) {
        println "${entry.getImageName()}: no overlay in ${folder}"
        missing++
        continue
    }
    def objects = PathIO.readObjects(overlay)
    def ids = objects.collect { it.getId() } as Set
    def imageData = entry.readImageData()
    def hierarchy = imageData.getHierarchy()
    def previous = hierarchy.getDetectionObjects().findAll { it.getId() in ids }
    if (!previous.isEmpty())
        hierarchy.removeObjects(previous, true)
    hierarchy.addObjects(objects)
    if (RESOLVE)
        hierarchy.resolveHierarchy()
    entry.saveImageData(imageData)
    println "${entry.getImageName()}: ${objects.size()} detections from ${overlay.getFileName()}" +
            (previous.isEmpty() ? "" : " (replacing ${previous.size()})")
    imported++
}
println "Imported ${imported} overlay(s); ${missing} image(s) without one."

/** The overlay named after the image's file (or, failing that, after its name in the project). */
Path findOverlay(entry, Path folder) {
    def stems = []
    for (uri in entry.getURIs()) {
        if (uri.getScheme() == "file")
            stems << stripExtension(Paths.get(uri).getFileName().toString())
    }
    stems << stripExtension(entry.getImageName())
    for (stem in stems.unique()) {
        for (suffix in [".geojson", ".geojson.gz"]) {
            Path candidate = folder.resolve(stem + suffix)
            if (Files.isRegularFile(candidate))
                return candidate
        }
    }
    return null
}

/** "slide.svs" -> "slide", as Python's Path.stem names wsi-ccrl's outputs. */
String stripExtension(String name) {
    int dot = name.lastIndexOf('.')
    return dot > 0 ? name.substring(0, dot) : name
}
