// The 3D view of an avatar: three.js (vendored), a GLB, orbit/zoom with the mouse, touch or keys,
// and front/side/reset views. The GLB is in metres, +Y up, the body facing +Z.
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";

export class AvatarViewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(0xeef1f5);
    this.scene.add(new THREE.HemisphereLight(0xffffff, 0x8890a0, 2.2));
    const key = new THREE.DirectionalLight(0xffffff, 1.4);
    key.position.set(1.5, 2.5, 3);
    this.scene.add(key);
    this.camera = new THREE.PerspectiveCamera(30, 1, 0.05, 50);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.enableDamping = false;
    this.controls.listenToKeyEvents(canvas); // arrow keys turn it while the canvas has focus
    this.controls.keys = { LEFT: "ArrowLeft", UP: "ArrowUp", RIGHT: "ArrowRight", BOTTOM: "ArrowDown" };
    this.controls.addEventListener("change", () => this.render());
    canvas.addEventListener("keydown", (e) => this.onKey(e));
    this.model = null;
    this.center = new THREE.Vector3(0, 0.9, 0);
    this.distance = 4;
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  async load(url) {
    const gltf = await new GLTFLoader().loadAsync(url);
    if (this.model) this.scene.remove(this.model);
    this.model = gltf.scene;
    this.scene.add(this.model);
    const box = new THREE.Box3().setFromObject(this.model);
    box.getCenter(this.center);
    const size = box.getSize(new THREE.Vector3());
    const fov = THREE.MathUtils.degToRad(this.camera.fov);
    this.distance = (Math.max(size.y, size.x / this.camera.aspect) / 2 / Math.tan(fov / 2)) * 1.25;
    this.controls.minDistance = this.distance * 0.2;
    this.controls.maxDistance = this.distance * 4;
    this.view("front");
  }

  view(which) {
    const dir = which === "side" ? new THREE.Vector3(1, 0, 0) : new THREE.Vector3(0, 0, 1);
    this.camera.position.copy(this.center).addScaledVector(dir, this.distance);
    this.controls.target.copy(this.center);
    this.controls.update();
    this.render();
  }

  onKey(e) {
    const zoom = { "+": 0.85, "=": 0.85, "-": 1 / 0.85, "_": 1 / 0.85 }[e.key];
    if (!zoom) return;
    const offset = this.camera.position.clone().sub(this.controls.target).multiplyScalar(zoom);
    const len = THREE.MathUtils.clamp(offset.length(), this.controls.minDistance, this.controls.maxDistance);
    this.camera.position.copy(this.controls.target).add(offset.setLength(len));
    this.controls.update();
    e.preventDefault();
  }

  resize() {
    const w = this.canvas.clientWidth || 300, h = this.canvas.clientHeight || 400;
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this.render();
  }

  render() {
    this.renderer.render(this.scene, this.camera);
  }
}
