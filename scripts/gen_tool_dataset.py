#!/usr/bin/env python3
"""Regenerates the templated part of data/datasets/tool_calling.json.

The hand-written examples (kind "direct", "contextual", "no_tool") are kept as they are;
this script replaces the examples whose kind starts with "templated_" by image requests
and ordinary turns built from the phrasings and subjects below, in Spanish and English.
It is deterministic (no randomness), so rerunning it gives the same file.

Nothing here may come from data/datasets/tool_calling_eval.json: the held-out prompts
and their subjects are checked against every generated prompt, and the script stops if
one leaks in.

    python3 scripts/gen_tool_dataset.py
"""
import json
import pathlib
import re
import sys
import unicodedata

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATASET = ROOT / "data/datasets/tool_calling.json"
EVAL = ROOT / "data/datasets/tool_calling_eval.json"

# Ways to ask for a picture: (template, language). "{s}" is the subject.
REQUESTS = [
    ("Genera una imagen de {s}", "es"), ("Dibuja {s}", "es"),
    ("Quiero una imagen de {s}", "es"), ("Hazme un dibujo de {s}", "es"),
    ("Pinta {s}", "es"), ("Crea una imagen de {s}", "es"),
    ("¿Puedes dibujar {s}?", "es"), ("Muéstrame una imagen de {s}", "es"),
    ("Dibújame {s}", "es"), ("Me gustaría una foto de {s}", "es"),
    ("Necesito una ilustración de {s}", "es"), ("Por favor, pinta {s}", "es"),
    ("Generate an image of {s}", "en"), ("Draw {s}", "en"),
    ("I want a picture of {s}", "en"), ("Paint {s}", "en"),
    ("Create an image of {s}", "en"), ("Can you draw {s}?", "en"),
    ("Show me a picture of {s}", "en"), ("Draw me {s}", "en"),
    ("Make an image of {s}", "en"), ("Sketch {s}", "en"),
    ("I'd like a painting of {s}", "en"), ("Please draw {s}", "en"),
]

# Subjects (Spanish, English, a sentence about it in each), none of them in the held-out
# prompts. Each is also the topic of an ordinary turn that does not ask for a picture, so
# that the model learns the call from the request, not from the subject.
SUBJECTS = [
    ("una jirafa comiendo hojas", "a giraffe eating leaves",
     "Las jirafas son los animales más altos y comen hojas de las ramas altas.",
     "Giraffes are the tallest animals and eat leaves from high branches."),
    ("un submarino amarillo", "a yellow submarine",
     "Un submarino es un barco que puede navegar bajo el agua.",
     "A submarine is a ship that can travel under water."),
    ("una tortuga en la arena", "a turtle on the sand",
     "Las tortugas marinas ponen sus huevos en la arena de las playas.",
     "Sea turtles lay their eggs in the sand of beaches."),
    ("un molino de viento", "a windmill",
     "Un molino de viento usa la fuerza del viento para moler grano o dar energía.",
     "A windmill uses the force of the wind to grind grain or make power."),
    ("una cabaña de troncos", "a log cabin",
     "Una cabaña de troncos es una casa pequeña hecha con troncos de madera.",
     "A log cabin is a small house built from wooden logs."),
    ("un pulpo bajo el agua", "an octopus under water",
     "El pulpo es un animal marino con ocho brazos y mucha inteligencia.",
     "The octopus is a clever sea animal with eight arms."),
    ("una biblioteca vacía", "an empty library",
     "Una biblioteca guarda libros para que la gente los lea o los preste.",
     "A library keeps books for people to read or borrow."),
    ("un camello en las dunas", "a camel in the dunes",
     "Los camellos viven en el desierto y aguantan muchos días sin beber.",
     "Camels live in the desert and can go many days without drinking."),
    ("una ballena saltando", "a whale jumping",
     "Las ballenas son mamíferos enormes que respiran aire en la superficie.",
     "Whales are huge mammals that breathe air at the surface."),
    ("un castillo de arena", "a sandcastle",
     "Un castillo de arena se hace en la playa con arena mojada.",
     "A sandcastle is made on the beach with wet sand."),
    ("una guitarra vieja", "an old guitar",
     "La guitarra es un instrumento de cuerdas que se toca con los dedos.",
     "The guitar is a string instrument played with the fingers."),
    ("un zorro dormido", "a sleeping fox",
     "Los zorros son animales astutos que duermen de día y cazan de noche.",
     "Foxes are clever animals that sleep by day and hunt at night."),
    ("una estación de metro", "a subway station",
     "Una estación de metro es donde los trenes subterráneos recogen pasajeros.",
     "A subway station is where underground trains pick up passengers."),
    ("un pingüino con bufanda", "a penguin with a scarf",
     "Los pingüinos son aves que no vuelan pero nadan muy bien.",
     "Penguins are birds that cannot fly but swim very well."),
    ("una granja con vacas", "a farm with cows",
     "En una granja se crían animales y se cultivan alimentos.",
     "On a farm people raise animals and grow food."),
    ("un reloj de bolsillo", "a pocket watch",
     "Un reloj de bolsillo es un reloj pequeño que se lleva en el bolsillo.",
     "A pocket watch is a small watch carried in a pocket."),
    ("una isla tropical", "a tropical island",
     "Una isla tropical tiene clima cálido, playas y palmeras.",
     "A tropical island has a warm climate, beaches and palm trees."),
    ("un mapa del tesoro", "a treasure map",
     "Un mapa del tesoro marca el lugar donde algo está escondido.",
     "A treasure map marks the place where something is hidden."),
    ("una tetera de porcelana", "a porcelain teapot",
     "Una tetera sirve para preparar y servir el té.",
     "A teapot is used to brew and serve tea."),
    ("un koala en un árbol", "a koala in a tree",
     "Los koalas viven en Australia y comen hojas de eucalipto.",
     "Koalas live in Australia and eat eucalyptus leaves."),
    ("una nube con forma de corazón", "a heart-shaped cloud",
     "Las nubes son gotas de agua diminutas que flotan en el aire.",
     "Clouds are tiny drops of water floating in the air."),
    ("un tractor rojo", "a red tractor",
     "Un tractor es una máquina que tira de arados y remolques en el campo.",
     "A tractor is a machine that pulls ploughs and trailers on farms."),
    ("una medusa brillante", "a glowing jellyfish",
     "Las medusas son animales marinos de cuerpo blando y transparente.",
     "Jellyfish are sea animals with soft, clear bodies."),
    ("un caracol en una hoja", "a snail on a leaf",
     "Los caracoles llevan su concha a cuestas y se mueven despacio.",
     "Snails carry their shell on their back and move slowly."),
]

# Ordinary turns: (question, answer, language). None asks for a picture, several
# mention pictures, drawing or painting without asking for one.
ORDINARY = [
    ("Buen día", "¡Buen día! ¿En qué puedo ayudarte?", "es"),
    ("Hola, ¿qué tal?", "¡Hola! Todo bien. ¿Qué quieres saber?", "es"),
    ("Saludos", "¡Saludos! Aquí estoy para ayudarte.", "es"),
    ("Hasta luego", "¡Hasta luego! Vuelve cuando quieras.", "es"),
    ("Adiós", "¡Adiós! Que tengas un buen día.", "es"),
    ("Muchas gracias", "¡De nada! Me alegra ayudar.", "es"),
    ("¿Cuántas horas tiene un día?", "Un día tiene veinticuatro horas.", "es"),
    ("¿Cuántos meses tiene un año?", "Un año tiene doce meses.", "es"),
    ("¿Cuántas patas tiene un perro?", "Un perro tiene cuatro patas.", "es"),
    ("¿Cuál es la capital de Portugal?", "La capital de Portugal es Lisboa.", "es"),
    ("¿Cuál es la capital de Alemania?", "La capital de Alemania es Berlín.", "es"),
    ("¿Cuál es la capital de Japón?", "La capital de Japón es Tokio.", "es"),
    ("¿Quién pintó el Guernica?", "El Guernica lo pintó Pablo Picasso.", "es"),
    ("¿Quién inventó la bombilla?", "Thomas Edison desarrolló la bombilla práctica.", "es"),
    ("¿Qué es un dibujo?", "Un dibujo es una imagen hecha con líneas sobre una superficie.", "es"),
    ("¿Qué es una pintura?", "Una pintura es una obra hecha con pigmentos sobre una superficie.", "es"),
    ("¿Qué es una cámara?", "Una cámara es un aparato que captura imágenes con luz.", "es"),
    ("Me gusta dibujar", "¡Qué bien! Dibujar ayuda a observar con atención.", "es"),
    ("Ayer pinté mi habitación", "¡Qué trabajo! Un color nuevo cambia mucho un cuarto.", "es"),
    ("¿Por qué llueve?", "Llueve cuando el vapor de las nubes se condensa en gotas pesadas.", "es"),
    ("¿Por qué el mar es salado?", "El mar es salado porque los ríos le llevan sales de las rocas.", "es"),
    ("Describe una ciudad", "Una ciudad es un lugar con muchas casas, calles y gente.", "es"),
    ("Describe un río", "Un río es una corriente de agua que fluye hacia el mar.", "es"),
    ("Describe una playa", "Una playa es una orilla de arena junto al mar.", "es"),
    ("Cuéntame algo sobre las abejas", "Las abejas hacen miel y polinizan las flores.", "es"),
    ("Cuéntame algo sobre los delfines", "Los delfines son mamíferos marinos muy inteligentes.", "es"),
    ("Háblame de los volcanes", "Un volcán expulsa lava, gases y ceniza del interior de la Tierra.", "es"),
    ("Explícame qué es la nieve", "La nieve es agua helada que cae en forma de copos.", "es"),
    ("Explícame qué es un planeta", "Un planeta es un cuerpo grande que gira alrededor de una estrella.", "es"),
    ("¿Qué es la luna?", "La Luna es el satélite natural de la Tierra.", "es"),
    ("¿Qué es un árbol?", "Un árbol es una planta grande con tronco, ramas y hojas.", "es"),
    ("¿Dónde viven los pingüinos?", "Los pingüinos viven sobre todo en el hemisferio sur.", "es"),
    ("¿Qué comen los caballos?", "Los caballos comen hierba, heno y grano.", "es"),
    ("¿Cómo estás?", "Estoy bien, gracias. ¿Y tú?", "es"),
    ("Good evening", "Good evening! How can I help you?", "en"),
    ("Hey there", "Hey! What would you like to know?", "en"),
    ("Greetings", "Greetings! I'm here to help.", "en"),
    ("See you later", "See you later! Come back any time.", "en"),
    ("Goodbye", "Goodbye! Have a nice day.", "en"),
    ("Thanks a lot", "You're welcome! Glad to help.", "en"),
    ("How many hours are in a day?", "A day has twenty-four hours.", "en"),
    ("How many months are in a year?", "A year has twelve months.", "en"),
    ("How many legs does a dog have?", "A dog has four legs.", "en"),
    ("What is the capital of Portugal?", "The capital of Portugal is Lisbon.", "en"),
    ("What is the capital of Germany?", "The capital of Germany is Berlin.", "en"),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo.", "en"),
    ("Who painted Guernica?", "Guernica was painted by Pablo Picasso.", "en"),
    ("Who invented the light bulb?", "Thomas Edison developed the practical light bulb.", "en"),
    ("What is a drawing?", "A drawing is a picture made with lines on a surface.", "en"),
    ("What is a painting?", "A painting is a work made with pigments on a surface.", "en"),
    ("What is a camera?", "A camera is a device that captures images with light.", "en"),
    ("I like drawing", "That's great! Drawing helps you look closely.", "en"),
    ("Yesterday I painted my room", "Nice work! A new colour changes a room a lot.", "en"),
    ("Why does it rain?", "It rains when water vapour in clouds condenses into heavy drops.", "en"),
    ("Why is the sea salty?", "The sea is salty because rivers carry salts from rocks into it.", "en"),
    ("Describe a city", "A city is a place with many houses, streets and people.", "en"),
    ("Describe a river", "A river is a stream of water that flows to the sea.", "en"),
    ("Describe a beach", "A beach is a sandy shore next to the sea.", "en"),
    ("Tell me something about bees", "Bees make honey and pollinate flowers.", "en"),
    ("Tell me something about dolphins", "Dolphins are very intelligent sea mammals.", "en"),
    ("Tell me about volcanoes", "A volcano throws out lava, gas and ash from inside the Earth.", "en"),
    ("Explain what snow is", "Snow is frozen water that falls as flakes.", "en"),
    ("Explain what a planet is", "A planet is a large body that orbits a star.", "en"),
    ("What is the moon?", "The Moon is the Earth's natural satellite.", "en"),
    ("What is a tree?", "A tree is a large plant with a trunk, branches and leaves.", "en"),
    ("Where do penguins live?", "Penguins live mostly in the southern hemisphere.", "en"),
    ("What do horses eat?", "Horses eat grass, hay and grain.", "en"),
    ("How are you?", "I'm fine, thank you. And you?", "en"),
]


def fold(text):
    """Lowercase without accents, for the overlap check."""
    nfkd = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in nfkd if not unicodedata.combining(c))


def words(text):
    return set(re.findall(r"\w{4,}", fold(text)))


def main():
    data = json.loads(DATASET.read_text(encoding="utf-8"))
    held = json.loads(EVAL.read_text(encoding="utf-8"))
    held_prompts = {fold(p) for p in held["image_requests"] + held["ordinary"]}
    held_subjects = set()
    for p in held["image_requests"]:
        held_subjects |= words(p)
    examples = [e for e in data["examples"] if not e["kind"].startswith("templated_")]
    generated = []
    # Each subject twice per language: once in an image request (the phrasings rotate,
    # so each meets two subjects) and once in an ordinary turn that asks about it without
    # asking for a picture.
    asks = {"es": ["Háblame de {s}", "Describe {s}"], "en": ["Tell me about {s}", "Describe {s}"]}
    for i, (es, en, about_es, about_en) in enumerate(SUBJECTS):
        for lang, subject, about in (("es", es, about_es), ("en", en, about_en)):
            leaked = words(subject) & held_subjects
            if leaked:
                sys.exit(f"subject {subject!r} shares {leaked} with a held-out request")
            forms = [t for t, l in REQUESTS if l == lang]
            call = json.dumps({"prompt": subject}, ensure_ascii=False)
            turns = [
                ("templated_request", forms[i % len(forms)], f"<TOOL:generate_image>{call}</TOOL>"),
                ("templated_no_tool", asks[lang][i % 2], about),
            ]
            for kind, template, answer in turns:
                generated.append({
                    "lang": lang,
                    "kind": kind,
                    "messages": [
                        {"role": "user", "content": template.format(s=subject)},
                        {"role": "assistant", "content": answer},
                    ],
                })
    for q, a, lang in ORDINARY:
        generated.append({
            "lang": lang,
            "kind": "templated_no_tool",
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ],
        })
    for e in generated:
        if fold(e["messages"][0]["content"]) in held_prompts:
            sys.exit(f"{e['messages'][0]['content']!r} is a held-out prompt")
    data["examples"] = examples + generated
    tmp = DATASET.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(DATASET)
    calls = sum(1 for e in data["examples"] if "<TOOL:" in e["messages"][-1]["content"])
    print(f"{len(data['examples'])} examples ({len(generated)} templated): "
          f"{calls} calls, {len(data['examples']) - calls} ordinary turns")


if __name__ == "__main__":
    main()
